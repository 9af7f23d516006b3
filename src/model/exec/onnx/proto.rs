//! The subset of the ONNX protobuf schema (`onnx/onnx.proto`, proto2) that the graph builder writes.
//!
//! Owns hand-written `prost` messages with the official field numbers, so no `protoc` or build script is needed.
//! Receives nothing; emits wire-compatible `ModelProto` bytes through `prost::Message::encode_to_vec`. Fields the
//! schema declares `optional` are `Option`s, so explicit zeros (e.g. `align_corners = 0`) are still written, as
//! proto2 would; unused fields are simply absent.

/// `TensorProto.DataType` values.
pub mod data_type {
    /// 32-bit IEEE float (`f32`).
    pub const FLOAT: i32 = 1;
    /// Signed 64-bit integer (`i64`): shapes, axes and indices.
    pub const INT64: i32 = 7;
    /// 16-bit IEEE float (`f16`): the half-precision graphs' weights and activations.
    pub const FLOAT16: i32 = 10;
    /// 64-bit IEEE float (`f64`).
    pub const DOUBLE: i32 = 11;
}

/// `AttributeProto.AttributeType` values.
pub mod attribute_type {
    /// One `f32` in `AttributeProto::f`.
    pub const FLOAT: i32 = 1;
    /// One `i64` in `AttributeProto::i`.
    pub const INT: i32 = 2;
    /// One UTF-8 byte string in `AttributeProto::s`.
    pub const STRING: i32 = 3;
    /// A list of `f32` in `AttributeProto::floats`.
    pub const FLOATS: i32 = 6;
    /// A list of `i64` in `AttributeProto::ints`.
    pub const INTS: i32 = 7;
}

/// A whole ONNX model file: versioning metadata around one graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// ONNX IR version the file follows (the builder writes `IR_VERSION`).
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    /// Operator sets (domain and version) the graph's nodes are resolved against.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Name of the tool that wrote the model.
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    /// Version of the tool that wrote the model.
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    /// Reverse-DNS namespace of the model, e.g. `com.example`.
    #[prost(string, optional, tag = "4")]
    pub domain: Option<String>,
    /// Version of the model itself, chosen by its producer.
    #[prost(int64, optional, tag = "5")]
    pub model_version: Option<i64>,
    /// Free-form documentation of the model.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// The computation: nodes, weights, inputs and outputs.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

/// One imported operator set: which version of a domain's operators the nodes mean.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// Operator domain; absent or empty is the default `ai.onnx` domain.
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// Opset version of that domain (the builder imports `OPSET_VERSION`).
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// A dataflow graph: nodes in topological order over named values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// The operators, each consuming values produced earlier (topologically sorted).
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Name of the graph.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// Constant tensors (weights and baked constants), referenced by name like any value.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Free-form documentation of the graph.
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    /// Values the caller feeds at run time, with their types and shapes.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Values the graph returns, with their types and shapes.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Optional type and shape information for intermediate values.
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// One operator application: named inputs in, named outputs out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Names of the consumed values, in the operator's input order; an empty name skips an optional input.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Names given to the produced values, in the operator's output order.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Name of the node, for diagnostics only.
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// Operator name within its domain, e.g. `Conv` or `GridSample`.
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    /// Operator domain; absent or empty is the default `ai.onnx` domain.
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    /// The operator's static parameters (kernel shape, axes, modes…).
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Free-form documentation of the node.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
}

/// A named static parameter of a node; `type` says which one of the value fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// Attribute name as the operator defines it, e.g. `kernel_shape`.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Free-form documentation of the attribute.
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    /// An `attribute_type` value.
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
    /// The value of a `FLOAT` attribute.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// The value of an `INT` attribute.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// The value of a `STRING` attribute (UTF-8 bytes).
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// The value of a `TENSOR` attribute.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// The values of a `FLOATS` attribute.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// The values of an `INTS` attribute.
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// The values of a `STRINGS` attribute.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// A constant tensor: shape, element type and data in exactly one of the data fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Shape, outermost dimension first (row-major); empty for a scalar.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// A `data_type` value.
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    /// Elements of a `FLOAT` tensor, when not stored in `raw_data`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// Elements of an `INT64` tensor, when not stored in `raw_data`.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Name by which nodes refer to the tensor (as an initializer).
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// Fixed-width little-endian elements.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// Free-form documentation of the tensor.
    #[prost(string, optional, tag = "12")]
    pub doc_string: Option<String>,
}

/// The name and type of a graph input, output or intermediate value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// Name of the value, as nodes refer to it.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Element type and shape of the value.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Free-form documentation of the value.
    #[prost(string, optional, tag = "3")]
    pub doc_string: Option<String>,
}

/// The type of a value; only dense tensors are used here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// Which kind of type this is (a tensor type).
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
    /// Optional semantic label of the type, e.g. `IMAGE`.
    #[prost(string, optional, tag = "6")]
    pub denotation: Option<String>,
}

/// The nested types of `TypeProto`.
pub mod type_proto {
    /// The kinds of type a `TypeProto` can hold.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A dense tensor type.
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }

    /// A dense tensor type: element type and (possibly symbolic) shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// A `data_type` value.
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        /// The shape; absent means unknown rank.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }
}

/// A tensor shape whose dimensions may be fixed sizes or symbolic names.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// The nested types of `TensorShapeProto`.
pub mod tensor_shape_proto {
    /// One dimension of a shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// The size or symbolic name; absent means unknown.
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        /// Optional semantic label of the dimension, e.g. `DATA_BATCH`.
        #[prost(string, optional, tag = "3")]
        pub denotation: Option<String>,
    }

    /// The nested types of `Dimension`.
    pub mod dimension {
        /// A dimension's size: a number or a name.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A fixed size (elements).
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// A symbolic size, equal wherever the same name appears (e.g. a dynamic batch).
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

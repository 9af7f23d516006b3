//! `identities list|remove|export|import`: the identity library from the command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::common::{identity_store, resolve_identity};

#[derive(Subcommand, Debug)]
pub enum IdentitiesCommand {
    /// List identities (broken ones are listed with the reason and never loaded).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an identity (by id or display name).
    Remove { name: String },
    /// Write an identity to a single archive file.
    Export { name: String, file: PathBuf },
    /// Add the identity stored in an archive file made by `export`.
    Import { file: PathBuf },
    /// Add a portrait as an identity, with its identity vector from an embedder or from a `.npy` file.
    Add(super::identities_add::AddArgs),
}

impl IdentitiesCommand {
    /// Runs the subcommand.
    pub fn run(self) -> Result<()> {
        let cmd = self;
        let store = identity_store()?;
        match cmd {
            IdentitiesCommand::List { json } => {
                let list = store.list()?;
                if json {
                    let rows: Vec<serde_json::Value> = list
                        .iter()
                        .map(|e| match &e.meta {
                            Ok(m) => serde_json::json!({
                                "id": e.id, "name": m.name, "ok": true, "created_unix_s": m.created_unix_s,
                                "personalized": m.personalization.is_some(),
                                "embedder": m.embedder.as_deref().unwrap_or(metaportrait::face::embed::DLIB_EMBEDDER_TAG),
                            }),
                            Err(err) => serde_json::json!({"id": e.id, "ok": false, "error": err.to_string()}),
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(rows));
                } else if list.is_empty() {
                    eprintln!("no identities in {}", store.root().display());
                } else {
                    for e in &list {
                        match &e.meta {
                            Ok(m) => {
                                let kind = if m.personalization.is_some() { "personalized" } else { "portrait" };
                                let embedder =
                                    m.embedder.as_deref().unwrap_or(metaportrait::face::embed::DLIB_EMBEDDER_TAG);
                                println!("{:<24} {:<32} {kind:<12} {embedder}", e.id, m.name);
                            }
                            Err(err) => println!("{:<24} BROKEN: {err}", e.id),
                        }
                    }
                }
            }
            IdentitiesCommand::Remove { name } => {
                let id = resolve_identity(&store, &name)?;
                store.remove(&id)?;
                eprintln!("removed `{id}`");
            }
            IdentitiesCommand::Export { name, file } => {
                let id = resolve_identity(&store, &name)?;
                store.export(&id, &file)?;
                eprintln!("exported `{id}` to {}", file.display());
            }
            IdentitiesCommand::Import { file } => {
                let id = store.import(&file).with_context(|| format!("importing {}", file.display()))?;
                eprintln!("imported as `{id}`");
            }
            IdentitiesCommand::Add(args) => super::identities_add::run(&store, &args)?,
        }
        Ok(())
    }
}

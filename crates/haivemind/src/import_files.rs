//! `haivemind import FILE`: which importer a file needs, and the run with progress. The
//! formats themselves are read in `haivemind_connectors::files`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use haivemind_connectors::files::{self, FileFormat, Parsed};
use haivemind_store::{ExternalOutcome, Store};
use serde_json::json;

use crate::commands::progress_bar;
use crate::output::Printer;

/// The largest file read whole (transcripts of long sessions run to tens of megabytes).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

pub(crate) fn run(
    store: &Store,
    printer: &Printer,
    path: &Path,
    format: Option<&str>,
) -> Result<()> {
    let format = format.and_then(FileFormat::parse);
    if path.is_dir() {
        if format.is_some_and(|f| f != FileFormat::ClaudeCode) {
            bail!(
                "{}: a directory is read as Claude Code transcripts (*.jsonl)",
                path.display()
            );
        }
        let files = transcripts_in(path)?;
        if files.is_empty() {
            bail!("{}: no .jsonl transcripts in it", path.display());
        }
        let mut parsed = Parsed::default();
        for file in &files {
            let one = files::claude_code(&read(file)?);
            parsed.docs.extend(one.docs);
            parsed.skipped_total += one.skipped_total;
        }
        return store_docs(
            store,
            printer,
            path,
            FileFormat::ClaudeCode,
            parsed,
            files.len(),
        );
    }
    if format == Some(FileFormat::Haivemind) {
        return crate::commands::import(store, printer, path);
    }
    let text = read(path)?;
    let format = match format.or_else(|| files::detect(&text)) {
        Some(format) => format,
        None => bail!(
            "{}: not a file hAIveMind can import (expected JSON lines of `haivemind export`, the MCP memory server, or a Claude Code transcript); name it with --format",
            path.display()
        ),
    };
    let parsed = match format {
        FileFormat::Haivemind => return crate::commands::import(store, printer, path),
        FileFormat::MemoryServer => files::memory_server(&text),
        FileFormat::ClaudeCode => files::claude_code(&text),
    };
    store_docs(store, printer, path, format, parsed, 1)
}

fn read(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{}: {size} bytes is more than the {MAX_FILE_BYTES} an import reads",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The `.jsonl` files of a directory and of its subdirectories one level down (Claude
/// Code keeps a directory per project), sorted.
fn transcripts_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let list = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        Ok(entries)
    };
    for entry in list(dir)? {
        if entry.is_dir() {
            found.extend(
                list(&entry)?
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "jsonl")),
            );
        } else if entry.extension().is_some_and(|e| e == "jsonl") {
            found.push(entry);
        }
    }
    Ok(found)
}

fn store_docs(
    store: &Store,
    printer: &Printer,
    path: &Path,
    format: FileFormat,
    parsed: Parsed,
    files: usize,
) -> Result<()> {
    let bar = progress_bar(parsed.docs.len() as u64, "importing");
    let (mut created, mut updated, mut unchanged) = (0usize, 0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    for doc in parsed.docs {
        bar.inc(1);
        let id = doc.id.clone();
        match store.upsert_external(doc) {
            Ok((_, ExternalOutcome::Created)) => created += 1,
            Ok((_, ExternalOutcome::Updated)) => updated += 1,
            Ok((_, ExternalOutcome::Unchanged)) => unchanged += 1,
            Err(error) => {
                failures.push(format!("{}: {error}", haivemind_core::error::excerpt(&id)))
            }
        }
    }
    bar.finish_and_clear();
    for failure in failures.iter().take(20) {
        eprintln!("{failure}");
    }
    printer.done(
        json!({
            "format": format.as_str(),
            "files": files,
            "imported": created,
            "updated": updated,
            "unchanged": unchanged,
            "skipped_lines": parsed.skipped_total,
            "skipped_line_numbers": parsed.skipped,
            "failed": failures.len(),
        }),
        &format!(
            "{}: {} ({} file{}): imported {created}, updated {updated}, unchanged {unchanged}, lines skipped {}, failed {}",
            path.display(),
            format.as_str(),
            files,
            if files == 1 { "" } else { "s" },
            parsed.skipped_total,
            failures.len()
        ),
    );
    if !failures.is_empty() {
        bail!("{} records could not be stored (above)", failures.len());
    }
    Ok(())
}

//! `haivemind bench tools`: what `tools/list` costs an agent's context under each tool
//! profile (`mcp.tool_profile`), in tokens of the embedding model's tokenizer (and the
//! four-bytes-a-token estimate, which is closer to what chat models' tokenizers give).

use std::path::Path;

use anyhow::Result;
use haivemind_core::Embedder;
use haivemind_core::config::ToolProfile;
use haivemind_core::embedder::estimate_tokens;
use serde_json::json;

pub fn run(model_dir: &Path, json_output: bool) -> Result<()> {
    let model = haivemind_embed::MiniLm::load(model_dir).ok();
    let mut rows = Vec::new();
    for profile in ToolProfile::ALL {
        let tools: Vec<_> = haivemind_mcp::tools::offered(profile)
            .map(|entry| entry.tool())
            .collect();
        let listed = serde_json::to_string(&json!({ "tools": tools }))?;
        let model_tokens = model.as_ref().and_then(|m| m.count_tokens(&listed));
        rows.push(json!({
            "profile": profile.as_str(),
            "tools": tools.len(),
            "bytes": listed.len(),
            "estimated_tokens": estimate_tokens(&listed),
            "model_tokens": model_tokens,
        }));
    }
    if json_output {
        println!("{}", json!({ "tools_list": rows }));
        return Ok(());
    }
    println!(
        "| profile | tools | bytes | tokens (~4 bytes each) | tokens (all-MiniLM-L6-v2 tokenizer) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row["profile"].as_str().unwrap_or(""),
            row["tools"],
            row["bytes"],
            row["estimated_tokens"],
            row["model_tokens"]
                .as_u64()
                .map_or_else(|| "no model".to_string(), |n| n.to_string())
        );
    }
    Ok(())
}

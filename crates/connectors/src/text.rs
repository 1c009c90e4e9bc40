//! Turning Confluence storage-format HTML and Jira's Atlassian Document Format into
//! readable plain text: headings, paragraphs, lists, tables and code kept as structure,
//! entities decoded, markup gone.

use serde_json::Value;

/// Decodes the HTML entities Confluence writes: named ones, `&#NN;` and `&#xHH;`.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Bytes, not a string slice: the 12th byte may fall inside a character (a crash the
        // fuzzer found), and ';' is ASCII, so where it is found is a character boundary.
        let Some(end) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            "ndash" => Some('–'),
            "mdash" => Some('—'),
            "hellip" => Some('…'),
            "rsquo" | "lsquo" => Some('\''),
            "rdquo" | "ldquo" => Some('"'),
            "copy" => Some('©'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Confluence storage format (XHTML with `ac:` macros) to text.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut list_depth: Vec<(bool, usize)> = Vec::new(); // (ordered, counter)
    let mut in_cell = false;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            push_text(&mut out, rest, in_cell);
            break;
        };
        push_text(&mut out, &rest[..open], in_cell);
        rest = &rest[open..];
        // CDATA (code macros keep their body here).
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").unwrap_or(after.len());
            out.push_str(&after[..end]);
            rest = after.get(end + 3..).unwrap_or("");
            continue;
        }
        let Some(close) = rest.find('>') else {
            break;
        };
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
            .collect::<String>()
            .to_ascii_lowercase();
        match (name.as_str(), closing) {
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", false) => {
                newline(&mut out, 2);
                let level = name[1..].parse::<usize>().unwrap_or(1);
                out.push_str(&"#".repeat(level));
                out.push(' ');
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "p" | "pre" | "blockquote", true) => {
                newline(&mut out, 2)
            }
            ("p" | "pre" | "blockquote" | "div", false) => newline(&mut out, 2),
            ("br", _) => out.push('\n'),
            ("ul", false) => list_depth.push((false, 0)),
            ("ol", false) => list_depth.push((true, 0)),
            ("ul" | "ol", true) => {
                list_depth.pop();
                newline(&mut out, 1);
            }
            ("li", false) => {
                newline(&mut out, 1);
                let depth = list_depth.len().max(1);
                out.push_str(&"  ".repeat(depth - 1));
                match list_depth.last_mut() {
                    Some((true, counter)) => {
                        *counter += 1;
                        out.push_str(&format!("{counter}. "));
                    }
                    _ => out.push_str("- "),
                }
            }
            ("tr", false) => newline(&mut out, 1),
            ("tr", true) => {
                let trimmed = out.trim_end_matches([' ', '|']).len();
                out.truncate(trimmed);
                out.push('\n');
            }
            ("td" | "th", false) => {
                in_cell = true;
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push_str(" | ");
                }
            }
            ("td" | "th", true) => in_cell = false,
            ("table", _) => newline(&mut out, 2),
            _ => {}
        }
    }
    tidy(&out)
}

fn push_text(out: &mut String, raw: &str, in_cell: bool) {
    let decoded = decode_entities(raw);
    let mut collapsed = String::new();
    let mut space = false;
    for c in decoded.chars() {
        if c.is_whitespace() {
            space = true;
        } else {
            if space && !collapsed.is_empty() {
                collapsed.push(' ');
            }
            if space
                && collapsed.is_empty()
                && !out.is_empty()
                && !out.ends_with([' ', '\n'])
                && !in_cell
            {
                collapsed.push(' ');
            }
            space = false;
            collapsed.push(c);
        }
    }
    if space && !collapsed.is_empty() {
        collapsed.push(' ');
    }
    out.push_str(&collapsed);
}

fn newline(out: &mut String, count: usize) {
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
    if out.is_empty() {
        return;
    }
    let have = out.chars().rev().take_while(|c| *c == '\n').count();
    for _ in have..count {
        out.push('\n');
    }
}

fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut out = String::new();
    let mut blank = 0;
    for line in lines {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

/// Atlassian Document Format (Jira Cloud descriptions) to text.
pub fn adf_to_text(document: &Value) -> String {
    let mut out = String::new();
    adf_node(document, &mut out, &mut Vec::new());
    tidy(&out)
}

fn adf_node(node: &Value, out: &mut String, lists: &mut Vec<(bool, usize)>) {
    let kind = node["type"].as_str().unwrap_or("");
    let children = |out: &mut String, lists: &mut Vec<(bool, usize)>| {
        for child in node["content"].as_array().into_iter().flatten() {
            adf_node(child, out, lists);
        }
    };
    match kind {
        "text" => out.push_str(node["text"].as_str().unwrap_or("")),
        "hardBreak" => out.push('\n'),
        "mention" => out.push_str(node["attrs"]["text"].as_str().unwrap_or("@someone")),
        "emoji" => out.push_str(node["attrs"]["text"].as_str().unwrap_or("")),
        "inlineCard" | "blockCard" => out.push_str(node["attrs"]["url"].as_str().unwrap_or("")),
        "heading" => {
            newline(out, 2);
            let level = node["attrs"]["level"].as_u64().unwrap_or(1) as usize;
            out.push_str(&"#".repeat(level.clamp(1, 6)));
            out.push(' ');
            children(out, lists);
            newline(out, 2);
        }
        "paragraph" | "blockquote" | "panel" => {
            if !lists.is_empty() {
                children(out, lists);
            } else {
                newline(out, 2);
                children(out, lists);
                newline(out, 2);
            }
        }
        "codeBlock" => {
            newline(out, 2);
            children(out, lists);
            newline(out, 2);
        }
        "bulletList" | "orderedList" => {
            lists.push((kind == "orderedList", 0));
            children(out, lists);
            lists.pop();
            newline(out, 1);
        }
        "listItem" => {
            newline(out, 1);
            out.push_str(&"  ".repeat(lists.len().saturating_sub(1)));
            match lists.last_mut() {
                Some((true, n)) => {
                    *n += 1;
                    out.push_str(&format!("{n}. "));
                }
                _ => out.push_str("- "),
            }
            children(out, lists);
        }
        "table" => {
            newline(out, 2);
            children(out, lists);
            newline(out, 2);
        }
        "tableRow" => {
            newline(out, 1);
            let cells: Vec<String> = node["content"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|cell| {
                    let mut text = String::new();
                    for child in cell["content"].as_array().into_iter().flatten() {
                        adf_node(child, &mut text, &mut Vec::new());
                    }
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect();
            out.push_str(&cells.join(" | "));
            out.push('\n');
        }
        "rule" => {
            newline(out, 2);
            out.push_str("---");
            newline(out, 2);
        }
        _ => children(out, lists),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by the fuzzer (tests/fuzz.rs): an `&` followed by multi-byte characters made
    /// the entity scan slice inside a character and panic, failing a whole import.
    #[test]
    fn an_ampersand_before_multibyte_text_is_kept_as_it_is() {
        let text = "&a \0\u{800}Aa0\u{800}";
        assert_eq!(decode_entities(text), text);
        assert_eq!(decode_entities("&é&#xE9;&amp;€"), "&éé&€");
        assert_eq!(
            html_to_text("<p>R&D — ünïcödé &amp; more</p>"),
            "R&D — ünïcödé & more"
        );
    }

    #[test]
    fn storage_format_becomes_readable_text() {
        let html = "<h1>Restart &amp; recover</h1><p>When <strong>elastic3</strong> is red&nbsp;&mdash; act:</p>\
            <ol><li>Drain it</li><li>Restart it</li></ol><ul><li>check &lt;heap&gt;</li></ul>\
            <table><tbody><tr><th>Node</th><th>Heap</th></tr><tr><td>elastic3</td><td>16g</td></tr></tbody></table>\
            <ac:structured-macro ac:name=\"code\"><ac:plain-text-body><![CDATA[curl -s localhost:9200]]></ac:plain-text-body></ac:structured-macro>\
            <p>Caf&#233; &#x2603;</p>";
        let text = html_to_text(html);
        assert_eq!(
            text,
            "# Restart & recover\n\nWhen elastic3 is red — act:\n\n1. Drain it\n2. Restart it\n- check <heap>\n\nNode | Heap\nelastic3 | 16g\n\ncurl -s localhost:9200\n\nCafé ☃"
        );
    }

    #[test]
    fn atlassian_document_format_becomes_readable_text() {
        let adf = json!({"type": "doc", "version": 1, "content": [
            {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Symptom"}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "502s on "},
                                                {"type": "text", "text": "proxy2", "marks": [{"type": "strong"}]}]},
            {"type": "bulletList", "content": [
                {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "nginx"}]}]},
                {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "upstream"}]}]}]},
            {"type": "codeBlock", "content": [{"type": "text", "text": "nginx -t"}]}
        ]});
        assert_eq!(
            adf_to_text(&adf),
            "## Symptom\n\n502s on proxy2\n\n- nginx\n- upstream\n\nnginx -t"
        );
    }
}

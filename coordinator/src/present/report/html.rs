//! `report.html`: the report as one self-contained page that opens from disk and fetches
//! nothing (no script, style, font or image from anywhere: the charts are the PNGs already
//! drawn, inlined as data URIs). It has the markdown report's content, provenance first
//! (converted from the same text, so the two never disagree), tables
//! that sort when their header is clicked, and per scenario a drill-down of its slowest
//! requests (timings, outcome, token counts; never the prompts).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use super::charts::Charts;
use super::timeline::SlowRequest;
use crate::output::SavedRun;

/// Text with `&`, `<`, `>` and `"` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Inline markdown of escaped text: `**bold**` and `` `code` ``.
fn inline(escaped: &str) -> String {
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
            continue;
        }
        for (j, p) in part.split("**").enumerate() {
            if j % 2 == 1 {
                let _ = write!(out, "<strong>{p}</strong>");
            } else {
                out.push_str(p);
            }
        }
    }
    out
}

/// The cells of a markdown table row (`\|` is a pipe inside a cell).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().expect("a cell").push('|');
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().expect("a cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// `![alt](src)` on a line of its own.
fn image(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix("![")?;
    let (alt, rest) = rest.split_once("](")?;
    Some((alt, rest.strip_suffix(')')?))
}

/// The markdown the report writer produces (headings, tables, lists, images, paragraphs),
/// as HTML; `img` turns an image's path into what the page shows.
pub fn from_markdown(md: &str, img: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    let mut para: Vec<String> = Vec::new();
    let flush = |out: &mut String, para: &mut Vec<String>| {
        if !para.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", para.join(" "));
            para.clear();
        }
    };
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        if t.is_empty() {
            flush(&mut out, &mut para);
            i += 1;
        } else if let Some(level) = ["### ", "## ", "# "].iter().position(|h| t.starts_with(h)) {
            flush(&mut out, &mut para);
            let n = 3 - level;
            let text = &t[n + 1..];
            let _ = writeln!(out, "<h{n}>{}</h{n}>", inline(&escape(text)));
            i += 1;
        } else if t.starts_with('|') {
            flush(&mut out, &mut para);
            let start = i;
            while i < lines.len() && lines[i].trim().starts_with('|') {
                i += 1;
            }
            table(&mut out, &lines[start..i]);
        } else if t.starts_with("- ") {
            flush(&mut out, &mut para);
            out.push_str("<ul>\n");
            while i < lines.len() && lines[i].trim().starts_with("- ") {
                let _ = writeln!(out, "<li>{}</li>", inline(&escape(&lines[i].trim()[2..])));
                i += 1;
            }
            out.push_str("</ul>\n");
        } else if let Some((alt, src)) = image(t) {
            flush(&mut out, &mut para);
            let _ = writeln!(
                out,
                "<figure><img alt=\"{}\" src=\"{}\"><figcaption>{}</figcaption></figure>",
                escape(alt),
                img(src),
                escape(alt)
            );
            i += 1;
        } else {
            para.push(inline(&escape(t)));
            i += 1;
        }
    }
    flush(&mut out, &mut para);
    out
}

/// A markdown table: header, separator, rows; sortable by a click on a header.
fn table(out: &mut String, rows: &[&str]) {
    out.push_str("<table class=\"sortable\">\n<thead><tr>");
    for c in cells(rows[0]) {
        let _ = write!(out, "<th>{}</th>", inline(&escape(&c)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows.iter().skip(2) {
        out.push_str("<tr>");
        for c in cells(r) {
            let _ = write!(out, "<td>{}</td>", inline(&escape(&c)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// A chart of the charts folder as a data URI (the page carries its images).
fn data_uri(dir: &Path, src: &str) -> String {
    match std::fs::read(dir.join(src)) {
        Ok(bytes) => format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        Err(_) => escape(src),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn slowest(out: &mut String, charts: &Charts) {
    if charts.slowest.values().all(Vec::is_empty) {
        return;
    }
    out.push_str("<section id=\"slowest\"><h2>Slowest requests</h2>\n<p>Per scenario, its slowest measured requests by end-to-end time: timings, outcome and token counts (the prompts are not kept in the report).</p>\n");
    for (name, reqs) in &charts.slowest {
        if reqs.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<details><summary>{} ({} slowest)</summary>",
            escape(name),
            reqs.len()
        );
        out.push_str("<table class=\"sortable\"><thead><tr><th>round</th><th>request</th><th>conversation / turn</th><th>outcome</th><th>queue ms</th><th>TTFT ms</th><th>E2E ms</th><th>prompt tokens</th><th>cached tokens</th><th>output tokens</th><th>retried</th><th>error</th></tr></thead><tbody>\n");
        for r in reqs {
            slow_row(out, r);
        }
        out.push_str("</tbody></table></details>\n");
    }
    out.push_str("</section>\n");
}

fn slow_row(out: &mut String, r: &SlowRequest) {
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        r.round,
        r.request_id,
        r.conversation_id,
        r.turn,
        r.outcome.label(),
        r.queue_ms,
        ms(r.ttft_ms),
        r.e2e_ms,
        r.prompt_tokens,
        opt(r.cached_tokens),
        opt(r.output_tokens),
        if r.retried { "yes" } else { "no" },
        escape(&r.error)
    );
}

const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC','Noto Sans',sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f8;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:' \\25B2'}
th[aria-sort=descending]::after{content:' \\25BC'}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}
figcaption{color:#555;font-size:13px}
code{background:#f4f4f4;padding:0 3px}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}";

/// Sorts a table by the clicked header's column: numbers as numbers (a leading figure,
/// `12.5%`, `33.1 / 40.2` by its first), else text; a second click reverses.
const SCRIPT: &str = "document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      t.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=t.tBodies[0];
      var rows=Array.prototype.slice.call(body.rows);
      var key=function(r){var s=r.cells[col]?r.cells[col].textContent.trim():'';var n=parseFloat(s);return isNaN(n)?s:n;};
      rows.sort(function(a,b){var x=key(a),y=key(b);var c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});";

/// The page.
pub fn render(saved: &SavedRun, markdown: &str, charts: &Charts, dir: &Path) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n<title>kvbench report {}</title>\n<style>{STYLE}</style></head><body>\n",
        escape(&saved.run.timestamp)
    );
    out.push_str(&from_markdown(markdown, &|src| data_uri(dir, src)));
    slowest(&mut out, charts);
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_of_the_report_becomes_html() {
        let md = "# kvbench report: p<1>.yaml\n\n- Run: **stopped**\n- `clear`\n\n| a | b\\|c |\n|---|---|\n| 1 | x & y |\n\n![A chart](f/c.png)\n\nsome text\nmore\n";
        let html = from_markdown(md, &|s| format!("IMG:{s}"));
        assert_eq!(
            html,
            "<h1>kvbench report: p&lt;1&gt;.yaml</h1>\n<ul>\n<li>Run: <strong>stopped</strong></li>\n<li><code>clear</code></li>\n</ul>\n<table class=\"sortable\">\n<thead><tr><th>a</th><th>b|c</th></tr></thead>\n<tbody>\n<tr><td>1</td><td>x &amp; y</td></tr>\n</tbody></table>\n<figure><img alt=\"A chart\" src=\"IMG:f/c.png\"><figcaption>A chart</figcaption></figure>\n<p>some text more</p>\n"
        );
    }
}

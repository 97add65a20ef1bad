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

/// The report's markdown as HTML (pulldown-cmark, with tables); `img` turns an image's
/// path into what the page shows. Raw HTML in the markdown (a label an agent sent, say) is
/// shown as text, never passed through; an image becomes a figure with its caption; every
/// table sorts when its header is clicked.
pub fn from_markdown(md: &str, img: &dyn Fn(&str) -> String) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut events = Vec::new();
    let mut image: Option<(String, String)> = None;
    for e in Parser::new_ext(md, Options::ENABLE_TABLES) {
        match (e, &mut image) {
            (Event::Start(Tag::Image { dest_url, .. }), None) => {
                image = Some((dest_url.into_string(), String::new()));
            }
            (Event::End(TagEnd::Image), Some(_)) => {
                let (src, alt) = image.take().unwrap_or_default();
                events.push(Event::Html(
                    format!(
                        "<figure><img alt=\"{alt}\" src=\"{}\"><figcaption>{alt}</figcaption></figure>",
                        img(&src),
                        alt = escape(&alt)
                    )
                    .into(),
                ));
            }
            (Event::Text(t) | Event::Code(t), Some((_, alt))) => alt.push_str(&t),
            (_, Some(_)) => {}
            (Event::Html(t) | Event::InlineHtml(t), None) => events.push(Event::Text(t)),
            (e, None) => events.push(e),
        }
    }
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events.into_iter());
    out.replace("<table>", "<table class=\"sortable\">")
        .replace("<p><figure>", "<figure>")
        .replace("</figure></p>", "</figure>")
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
        for want in [
            "<h1>kvbench report: p&lt;1&gt;.yaml</h1>",
            "<li>Run: <strong>stopped</strong></li>",
            "<li><code>clear</code></li>",
            "<table class=\"sortable\">",
            "<th>b|c</th>",
            "<td>x &amp; y</td>",
            "<figure><img alt=\"A chart\" src=\"IMG:f/c.png\"><figcaption>A chart</figcaption></figure>",
            "<p>some text\nmore</p>",
        ] {
            assert!(html.contains(want), "{want} in {html}");
        }
        assert!(!html.contains("<p><figure>"), "{html}");
    }

    #[test]
    fn html_in_the_markdown_is_shown_as_text() {
        let md = "A label: <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n| l |\n|---|\n| <b>x</b> |\n";
        let html = from_markdown(md, &|s| s.to_owned());
        assert!(
            !html.contains("<script>") && !html.contains("<img") && !html.contains("<b>"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }
}

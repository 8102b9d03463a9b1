"""One report structure (sections of paragraphs, tables and figures) written as HTML, Markdown and CSV.

The HTML is one self-contained file: PNGs are embedded as base64, no script or style comes from the network. A tiny
inline script marks ``<body data-images-loaded="true">`` once every image has decoded (the browser test checks it).
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from reports._plots import Figure


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    row_classes: list[str] = field(default_factory=list)  # leader | tied | baseline | failed, space separated
    table_id: str = ""


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # str (a paragraph, Markdown-light), Table or Figure
    anchor: str = ""


@dataclass
class Document:
    title: str
    summary: list[str]  # the headline lines at the top
    banner: str  # a warning shown above everything (running sweep, no trials); empty when none
    sections: list[Section]


def fmt(x: float | None, err: float | None = None) -> str:
    """``0.8123 ± 0.0041``: the error to 2 significant digits and the value to the same decimal place."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if err is not None and math.isfinite(err) and err > 0:
        decimals = max(0, min(8, 1 - int(math.floor(math.log10(err)))))
        return f"{x:.{decimals}f} ± {err:.{decimals}f}"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def fmt_param(value: str | None) -> str:
    """A logged param for a table cell: floats to 3 significant digits (the CSV keeps them whole); blank if None."""
    if value is None:
        return ""
    try:
        x = float(value)
    except ValueError:
        return value
    if not math.isfinite(x) or x.is_integer() or value.strip().lower() in ("true", "false"):
        return value
    return f"{x:.3g}"


def fmt_delta(x: float | None, err: float | None = None) -> str:
    """A signed difference, ``+0.055 ± 0.014``."""
    return "n/a" if x is None else ("+" if x >= 0 else "−") + fmt(abs(x), err)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1300px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f2f2f2;position:sticky;top:0}td.text{text-align:left;white-space:normal;max-width:28em}
tr.leader td{background:#e3f4e3;font-weight:600}tr.tied td{background:#f1faf1}tr.baseline td{background:#eef}
tr.failed td{color:#a33}.banner{background:#fff4d6;border:1px solid #e0b84c;padding:.6em 1em;margin:1em 0}
.summary li{margin:.2em 0}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #eee}.scroll{overflow-x:auto;max-height:70vh}
"""

IMAGES_LOADED_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-loaded', ok ? 'true' : 'false');
  document.body.setAttribute('data-image-count', String(imgs.length));
});
"""


def _inline_md(text: str) -> str:
    """Paragraphs are plain text with **bold** and `code`: escape, then apply those two."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for i, row in enumerate(t.rows):
        cls = t.row_classes[i] if i < len(t.row_classes) else ""
        cells = "".join(f"<td{_align(c)}>{_cell_html(c)}</td>" for c in row)
        body.append(f'<tr class="{cls}">{cells}</tr>')
    tid = f' id="{t.table_id}"' if t.table_id else ""
    return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _align(c: str) -> str:
    """Numbers right-aligned (digits line up), words left-aligned (names read from their start)."""
    numeric = c[:1].isdigit() or c[:1] in "+−-.–" or c in ("n/a", "")
    return "" if numeric else ' class="text"'


def _cell_html(c: str) -> str:
    if c.startswith("http://") or c.startswith("https://"):
        return f'<a href="{html.escape(c)}">run</a>'
    return html.escape(c)


def _html_figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode()
    return (f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f.title)}: {html.escape(f.caption)}</figcaption></figure>")


def write_html(doc: Document, path: Path) -> None:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>",
             f"<style>{CSS}</style><script>{IMAGES_LOADED_JS}</script></head><body>",
             f"<h1>{html.escape(doc.title)}</h1>"]
    if doc.banner:
        parts.append(f'<div class="banner">{_inline_md(doc.banner)}</div>')
    parts.append('<ul class="summary">' + "".join(f"<li>{_inline_md(s)}</li>" for s in doc.summary) + "</ul>")
    links = " · ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in doc.sections)
    parts.append(f"<p>{links}</p>")
    for s in doc.sections:
        parts.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Table):
                parts.append(_html_table(b))
            elif isinstance(b, Figure):
                parts.append(_html_figure(b))
            else:
                parts.append(f"<p>{_inline_md(b)}</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def _md_table(t: Table) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in t.headers) + " |", "|" + "---|" * len(t.headers)]
    for row in t.rows:
        lines.append("| " + " | ".join(f"[run]({c})" if c.startswith("http") else esc(c) for c in row) + " |")
    return "\n".join(lines)


def write_markdown(doc: Document, path: Path, figure_dir: str = "figures") -> None:
    (path.parent / figure_dir).mkdir(parents=True, exist_ok=True)
    lines = [f"# {doc.title}", ""]
    if doc.banner:
        lines += [f"> **Note:** {doc.banner}", ""]
    lines += [f"- {s}" for s in doc.summary] + [""]
    for s in doc.sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                lines += [_md_table(b), ""]
            elif isinstance(b, Figure):
                (path.parent / figure_dir / f"{b.key}.png").write_bytes(b.png)
                lines += [f"![{b.title}]({figure_dir}/{b.key}.png)", "", f"*{b.title}: {b.caption}*", ""]
            else:
                lines += [b, ""]
    path.write_text("\n".join(lines), encoding="utf-8")

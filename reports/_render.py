"""One report structure (sections of paragraphs, tables and figures) rendered as HTML and Markdown.

The HTML is one self-contained file: PNGs are embedded as base64, no script or style comes from the network. A tiny
inline script marks ``<body data-images-loaded="true">`` once every image has decoded, and records the ranking
table's width (the browser test checks both). Text from the store (run names, parameter values, failure messages)
is escaped in both formats: HTML in a parameter value is shown, never rendered.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field

from reports._plots import Figure

NOT_LOGGED = "n/a"  # never logged (e.g. no GPU on a CPU trial)
UNDEFINED = "—"  # logged as NaN: undefined at that epoch (no event predicted as that class)
UNKNOWN = "?"  # an error that should exist but was not logged (an older store, a figure without `_err`)


@dataclass(frozen=True)
class Cell:
    """A table cell with a tooltip (``title``: the full run name behind ``t07``) or a link."""

    text: str
    title: str = ""
    href: str = ""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str | Cell]]
    row_classes: list[str] = field(default_factory=list)  # leader | tied | baseline | failed | reference
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


def _decimals(err: float) -> int:
    """Decimal places that show a 1-sigma error to 2 significant digits."""
    return max(0, min(8, 1 - int(math.floor(math.log10(err)))))


def fmt(x: float | None, err: float | None = None) -> str:
    """``0.8123 ± 0.0041``: the error to 2 significant digits and the value to the same decimal place. ``err`` None:
    a figure without an error; NaN: an unknown error, shown ``0.8123 ± ?``."""
    if x is None:
        return NOT_LOGGED
    if isinstance(x, float) and math.isnan(x):
        return UNDEFINED
    if err is not None and math.isfinite(err) and err > 0:
        decimals = _decimals(err)
        return f"{x:.{decimals}f} ± {err:.{decimals}f}"
    if err is not None and math.isnan(err):
        return f"{fmt(x)} ± {UNKNOWN}"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def column_decimals(values: list[float | None], errs: list[float | None] | None = None) -> int:
    """One number of decimals for a whole column: what its typical error needs (2 significant digits), else what
    shows its largest value to 4 significant digits. Digits then line up and compare across rows."""
    good = sorted(e for e in (errs or []) if e is not None and math.isfinite(e) and e > 0)
    if good:
        return _decimals(good[len(good) // 2])  # the median error: one tiny error does not pad the whole column
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 3
    return max(0, min(6, 3 - int(math.floor(math.log10(max(finite))))))


def fmt_fixed(x: float | None, decimals: int, err: float | None = None) -> str:
    """A value (± error) with a fixed number of decimals: the cells of one column (``± ?``: an unknown error)."""
    if x is None:
        return NOT_LOGGED
    if math.isnan(x):
        return UNDEFINED
    if err is not None and math.isfinite(err) and err > 0:
        return f"{x:.{decimals}f} ± {err:.{decimals}f}"
    if err is not None and math.isnan(err):
        return f"{x:.{decimals}f} ± {UNKNOWN}"
    return f"{x:.{decimals}f}"


def fmt_err(err: float | None) -> str:
    """An error on its own: 2 significant digits; ``?`` when unknown (NaN)."""
    if err is None:
        return NOT_LOGGED
    return UNKNOWN if math.isnan(err) else f"{err:.2g}"


def tie_text(tied: bool | None) -> str:
    """A tie column's cell: ``≈ tied``, blank, or ``?`` when the error needed to decide is not logged."""
    return UNKNOWN if tied is None else ("≈ tied" if tied else "")


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
    if x is None:
        return NOT_LOGGED
    if math.isnan(x):
        return UNDEFINED
    return ("+" if x >= 0 else "−") + fmt(abs(x), err)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1300px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.2em .35em;text-align:right;white-space:nowrap}
th{background:#f2f2f2;position:sticky;top:0;white-space:normal;vertical-align:bottom}td.text{text-align:left;white-space:normal;max-width:24em}
td[title]{text-decoration:underline dotted;cursor:help}
tr.leader td{background:#e3f4e3;font-weight:600}tr.tied td{background:#f1faf1}tr.baseline td{background:#eef}
tr.reference td{background:#fbeaea;font-style:italic}tr.failed td{color:#a33}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:.6em 1em;margin:1em 0}
.summary li{margin:.2em 0}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #eee}.scroll{overflow-x:auto;max-height:70vh}
"""

PAGE_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-loaded', ok ? 'true' : 'false');
  document.body.setAttribute('data-image-count', String(imgs.length));
  var t = document.getElementById('ranking-table');
  if (t) {  // the table's own width, even where its box scrolls sideways
    var cells = t.rows.length ? t.rows[0].cells : [];
    var right = cells.length ? cells[cells.length - 1].getBoundingClientRect().right : 0;
    document.body.setAttribute('data-ranking-width', String(right - t.getBoundingClientRect().left));
  }
});
"""


def _inline_md(text: str) -> str:
    """Paragraphs are plain text with **bold** and `code`: escape, then apply those two."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _cell(c: str | Cell) -> Cell:
    return c if isinstance(c, Cell) else Cell(c)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for i, row in enumerate(t.rows):
        cls = t.row_classes[i] if i < len(t.row_classes) else ""
        cells = "".join(_cell_html(_cell(c)) for c in row)
        body.append(f'<tr class="{cls}">{cells}</tr>')
    tid = f' id="{t.table_id}-table"' if t.table_id else ""  # "-table": the section's heading has the bare id
    return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _numeric(text: str) -> bool:
    """Numbers right-aligned (digits line up), words left-aligned (names read from their start)."""
    return text[:1].isdigit() or text[:1] in "+−-.–" or text in (NOT_LOGGED, UNDEFINED, "")


def _cell_html(c: Cell) -> str:
    align = "" if _numeric(c.text) else ' class="text"'
    title = f' title="{html.escape(c.title)}"' if c.title else ""
    text = html.escape(c.text)
    if c.href:
        text = f'<a href="{html.escape(c.href)}">{text}</a>'
    return f"<td{align}{title}>{text}</td>"


def _html_figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode()
    return (f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f.title)}: {html.escape(f.caption)}</figcaption></figure>")


def render_html(doc: Document) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>",
             f"<style>{CSS}</style><script>{PAGE_JS}</script></head><body>",
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
    return "\n".join(parts)


def md_escape(text: str) -> str:
    """Markdown text from the store, safe: HTML escaped outside code spans (inside them Markdown shows it as
    written), and no line breaks (a failure message would end a table row)."""
    text = " ".join(str(text).splitlines())
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code span at all, escape everything
        return _no_html("`".join(parts))
    return "`".join(p if i % 2 else _no_html(p) for i, p in enumerate(parts))


def _no_html(text: str) -> str:
    """``&`` and ``<`` as entities: no tag, comment or entity can start (``>`` alone cannot, and stays readable)."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _md_cell(c: str | Cell) -> str:
    c = _cell(c)
    text = md_escape(c.text).replace("|", "\\|")
    return f"[{text}](<{c.href}>)" if c.href else text


def _md_table(t: Table) -> str:
    lines = ["| " + " | ".join(md_escape(h).replace("|", "\\|") for h in t.headers) + " |",
             "|" + "---|" * len(t.headers)]
    for row in t.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    return "\n".join(lines)


def render_markdown(doc: Document, figure_dir: str = "figures") -> tuple[str, dict[str, bytes]]:
    """The Markdown text and its figures ({relative path: PNG})."""
    figures: dict[str, bytes] = {}
    lines = [f"# {md_escape(doc.title)}", ""]
    if doc.banner:
        lines += [f"> **Note:** {md_escape(doc.banner)}", ""]
    lines += [f"- {md_escape(s)}" for s in doc.summary] + [""]
    for s in doc.sections:
        lines += [f"## {md_escape(s.title)}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                lines += [_md_table(b), ""]
            elif isinstance(b, Figure):
                rel = _figure_path(figure_dir, b.key, figures)
                figures[rel] = b.png
                lines += [f"![{md_escape(b.title)}]({rel})", "", f"*{md_escape(b.title)}: {md_escape(b.caption)}*", ""]
            else:
                lines += [md_escape(b), ""]
    return "\n".join(lines), figures


def _figure_path(folder: str, key: str, taken: dict) -> str:
    """``figures/<key>.png``, the key made a plain file name (it may hold a truth dataset's name) and unique."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", key) or "figure"
    rel, n = f"{folder}/{stem}.png", 2
    while rel in taken:
        rel, n = f"{folder}/{stem}_{n}.png", n + 1
    return rel

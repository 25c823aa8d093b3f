"""An executed notebook rendered as one self-contained HTML file: code hidden, outputs only, images inline,
nothing loaded from the web (a report must open offline)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomically

__all__ = ["export_html"]

logger = logging.getLogger(__name__)

# JupyterLab's template loads require.js and MathJax from a CDN (and mermaid and the widget manager when
# needed); a report must open offline, so those blocks are emptied. Math in markdown shows as TeX source.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


class _NbconvertLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """nbconvert's log under labkit's logger, with its notice about images without alternative text (every
    matplotlib figure has none; nbconvert adds a generic one) at debug level instead of warning."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith("Alternative text is missing"):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


def export_html(notebook: Path, html: Path, *, title: str | None = None) -> Path:
    """Render an executed notebook as one self-contained HTML file: code hidden, outputs only, images
    inline (outputs are base64 already; markdown images are embedded), no script or style from the web."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"labkit_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="labkit_offline.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        log=_NbconvertLog(logger, {}),
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(notebook.parent)}})
    write_atomically(html, body)
    return html

"""Strings from a dataset, a file name or a run folder, shown as text: `md` wherever Streamlit renders markdown
(st.markdown, captions, alerts, headings, image captions, st.table cells, metrics, and the labels of widgets,
expanders and radio options), `plot` wherever plotly reads its HTML subset (titles, tick labels, hover text, legends,
annotations). Selectbox options, st.text, st.code and st.dataframe cells show strings as they are and need neither.
"""
from __future__ import annotations

import html
import re

WORD_JOINER = "\u2060"  # invisible, and never a place to break a line
_LINE_BREAK = re.compile(r"[\r\n]+")
# Backslash-escaped everywhere: what makes emphasis, code, links, images, HTML, entities, math, strikethrough, tables,
# headings, quotes and escapes. The rest of ASCII punctuation (.,:;()-+=/?!'"@%{}^) does nothing inside a line once
# these are escaped, so names, verdicts and run ids keep their markdown source as they read.
_SPECIAL = frozenset("\\`*_[]<>&$~|#")
# ...but at the start of a line a few more make a block: "- a", "+ a", "1. a", "1) a", ":::name", "===".
_LINE_START = re.compile(r"\s*(?:\d+[.)]|[-+=:])")
# Rewrites that act on the text after escapes are resolved, so no backslash stops them (seen in Chromium, Streamlit
# 1.67): GFM autolinks, emoji and :streamlit: shortcodes, :material_icon:, :directives, and arrows. A word joiner
# after the first character of each keeps the text as it reads and the pattern unrecognised.
_REWRITTEN = re.compile(r"""
    :(?=[\w+/-])                              # :smile:, :streamlit:, :material_home:, :name{...}, http://
  | @(?=[-\w])                                # a@b.c
  | (?i:www)(?=\.)                            # www.example.com
  | (?<!\S)(?:<->|->|<-|--|>=|<=|~=)(?!\S)    # arrows, a dash and signs when they stand alone
""", re.VERBOSE)


def md(text: object) -> str:
    """`text` shown literally where Streamlit renders markdown, on one line (newlines become spaces)."""
    text = _LINE_BREAK.sub(" ", str(text))
    text = _REWRITTEN.sub(lambda match: match[0][0] + WORD_JOINER + match[0][1:], text)
    start = _LINE_START.match(text)
    first = start.end() - 1 if start else -1
    return "".join("\\" + c if c in _SPECIAL or i == first else c for i, c in enumerate(text))


def plot(text: object) -> str:
    """`text` shown literally in a plotly label: `<a>`, `<b>`, `<br>` and `&…;` are escaped, and plotly turns the
    escapes back into the characters when it draws. Quotes stay: plotly draws `&quot;` as it is written."""
    return html.escape(str(text), quote=False)

"""The web inbox's search highlighting: matches marked, everything else escaped."""

from __future__ import annotations

import html

from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from smsinbox.webui.render import highlight


def test_each_word_of_the_query_is_marked_whatever_its_case() -> None:
    assert highlight("Parcel arrives; the parcel left", "parcel LEFT") == Markup(
        "<mark>Parcel</mark> arrives; the <mark>parcel</mark> <mark>left</mark>"
    )


def test_the_longest_word_wins_where_words_overlap() -> None:
    assert highlight("message 77", "77 message mess") == Markup(
        "<mark>message</mark> <mark>77</mark>"
    )


def test_text_and_matches_are_escaped() -> None:
    assert highlight('<b>"a<b"</b> & A<B', "a<b") == Markup(
        "&lt;b&gt;&#34;<mark>a&lt;b</mark>&#34;&lt;/b&gt; &amp; <mark>A&lt;B</mark>"
    )


def test_a_query_without_words_marks_nothing() -> None:
    assert highlight("a <b>", "   ") == Markup("a &lt;b&gt;")


@given(st.text(), st.text())
def test_unmarked_the_text_reads_as_it_was(text: str, query: str) -> None:
    marked = str(highlight(text, query))
    assert isinstance(highlight(text, query), Markup)
    assert html.unescape(marked.replace("<mark>", "").replace("</mark>", "")) == text
    assert "<" not in marked.replace("<mark>", "").replace("</mark>", "")

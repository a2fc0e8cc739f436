"""The documentation holds together: every relative link in README.md, docs/ and benches/ names a
file that exists and, with a `#fragment`, a heading in it (GitHub's anchors); README.md stays short
(what it is, the two commands, examples; guides in docs/). Needs no Blender."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benches").glob("*.md"))]
README_MAX_BYTES = 10 * 1024
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text):
    """The lines outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield line


def _anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    seen = {}
    anchors = set()
    for line in _prose(path.read_text()):
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = _anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def test_anchor_rule():
    assert _anchor("For LLM agents: `blendwire mcp`") == "for-llm-agents-blendwire-mcp"
    assert _anchor("Router: cr8_engine over Socket.IO") == "router-cr8_engine-over-socketio"
    assert _anchor("Blender 3.x – 4.1 (legacy add-on)") == "blender-3x--41-legacy-add-on"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for line in _prose(doc.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{target}: no file {file}")
            elif fragment and file.suffix == ".md" and fragment not in _anchors(file):
                broken.append(f"{target}: no heading #{fragment} in {file.name}")
    assert not broken, f"{doc.name}: broken links:\n" + "\n".join(broken)


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; keep it under {README_MAX_BYTES}, guides in docs/"

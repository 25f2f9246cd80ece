"""Docs that must match the code: README commands, CI, exit codes."""

from __future__ import annotations

import re
from pathlib import Path

from tinytown.core.errors import ExitStatus

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci_lines[-1] == test_command


def test_readme_run_command_uses_the_gunicorn_config_module():
    run_command = readme_commands()[0]
    assert "gunicorn -c python:tinytown.gunicorn_conf townhall:app" in run_command


def test_readme_documents_every_exit_code():
    section = README.split("## Exit codes", 1)[1].split("##", 1)[0]
    for status in ExitStatus:
        assert f"`{int(status)}`" in section, status.name


def test_the_worker_docs_list_every_event_the_worker_logs():
    files = [ROOT / "agent_worker.py", *sorted((ROOT / "tinytown" / "worker").glob("*.py"))]
    source = "\n".join(f.read_text() for f in files)
    events = set(re.findall(r"\blog\(\s*\"([a-z_]+)\"", source))
    logs_section = (
        (ROOT / "docs" / "worker.md").read_text().split("## Logs", 1)[1].split("\n## ", 1)[0]
    )
    documented = set(re.findall(r"`([a-z_]+)`", logs_section))
    assert len(events) > 30  # the pattern still finds the worker's log calls
    assert events - documented == set()


# --- links: the docs stand on their own -------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\".*\")?\s*$", re.M)


def without_code(text: str) -> str:
    """The text without fenced code blocks and code spans (what is in them is not a link)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (duplicates get -1, -2, …)."""
    anchors: set[str] = set()
    text = re.sub(r"^(```|~~~).*?^\1", "", path.read_text(), flags=re.S | re.M)
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def doc_links() -> list[tuple[Path, str]]:
    found = []
    for doc in DOCS:
        text = without_code(doc.read_text())
        found += [(doc, target) for target in LINK.findall(text) + REFERENCE.findall(text)]
    return found


def test_every_relative_link_in_the_docs_resolves_inside_the_repository():
    broken = []
    for doc, target in doc_links():
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: … — not a file here
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        where = f"{doc.relative_to(ROOT)} → {target}"
        if path_part.startswith("/") or not resolved.is_relative_to(ROOT):
            broken.append(f"{where}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{where}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in heading_anchors(resolved)):
            broken.append(f"{where}: no heading #{anchor} there")
    assert len(doc_links()) > 50  # the pattern still finds the docs' links
    assert broken == []


def test_no_doc_names_a_relative_path_that_is_not_in_the_repository():
    """`../x` in a code span is read as a path too: it must be a file of the repository."""
    mentions = []
    for doc in DOCS:
        for m in re.findall(r"`(\.\./[^`\s]*)`", doc.read_text()):
            resolved = (doc.parent / m.split("#")[0]).resolve()
            if not (resolved.is_relative_to(ROOT) and resolved.exists()):
                mentions.append(f"{doc.relative_to(ROOT)}: {m}")
    assert mentions == []


def test_the_concepts_page_is_linked_from_the_top_of_the_readme():
    top = README.split("\n## ", 1)[0]
    assert "(docs/concepts.md)" in top
    assert (ROOT / "docs" / "concepts.md").exists()


# --- docs/mcp.md: the tool table is the operations table --------------------------------------

MCP_TABLE_START = "<!-- tools: generated from tinytown.ops (tests/test_docs.py) -->"
MCP_TABLE_END = "<!-- /tools -->"


def mcp_tool_table() -> str:
    """The tools of docs/mcp.md, as ``tools/list`` orders them: name, scope, REST route, what."""
    from tinytown import ops
    from tinytown.mcp.tools import tool_list

    rows = ["| Tool | Scope | REST route | What it does |", "|---|---|---|---|"]
    for tool in tool_list():
        op = ops.OPERATIONS[tool["name"]]
        name = f"`{op.name}`" + "".join(f" (also `{a}`)" for a in op.aliases)
        what = op.summary.replace("<", "&lt;").replace("|", "\\|")
        rows.append(f"| {name} | `{op.scope}` | `{op.rest}` | {what} |")
    return "\n".join(rows)


def test_the_mcp_doc_lists_every_tool_as_the_operations_table_defines_it():
    text = (ROOT / "docs" / "mcp.md").read_text()
    table = text.split(MCP_TABLE_START, 1)[1].split(MCP_TABLE_END, 1)[0].strip()
    assert table == mcp_tool_table(), "paste this table into docs/mcp.md:\n" + mcp_tool_table()

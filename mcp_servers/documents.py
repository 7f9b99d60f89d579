"""Read documents as text or markdown over MCP: PDF, DOCX, XLSX, CSV, PPTX, JSON, JSONL, XML,
HTML, plain text, and ZIP archives (list the members, read one).

Documents are parsed in worker processes under memory, CPU and time limits (`--parse-*`, see
`parsing`), so a hostile file costs at most those and never holds the server. Paths are confined
to allowed roots. The server's own are given as `--allow PATH` (repeatable)
or as a JSON list in `MEMENTO_ALLOWED_PATHS`. Over stdio (the server answers only the memento
process that started it), each call adds the calling run's attached files and workspace, which
memento's client sends with it (`memento/run` in the request's `_meta`): one server process serves
many runs, and each call sees only its own run's files. Over HTTP, where any holder of a token can
call, a call's `_meta` may only narrow the server's own roots, never widen them. A root may be a
file (only it may be read) or a folder (anything inside). Files are found by walking down from a
root without following any link. Output is capped, and a cut says so.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import io
import json
import math
import os
import zipfile
from pathlib import Path, PurePath, PurePosixPath
from typing import Callable

import anyio
from mcp.server.fastmcp import Context, FastMCP

from memento.mcp_servers._run import add_transport_options, over_http, run_scope, run_server
from memento.mcp_servers.parsing import ParseLimits, ParserPool
from memento.mcp_servers.workspace import PathRefused, list_beneath, locate, read_beneath

MAX_CHARS = 20_000
MAX_MEMBER_BYTES = 50 * 2**20  # a ZIP member larger than this once unpacked is not read
MAX_FILE_BYTES = 50 * 2**20
MAX_UNPACKED_BYTES = 200 * 2**20  # Office files are ZIPs: their parsers unpack everything
MAX_RATIO = 200  # unpacked / packed, per member of more than a megabyte: a ZIP bomb beyond this
MAX_ROWS = 2_000
MAX_LISTED = 2_000
LISTING = "\x00listing"  # asks a parser worker for a ZIP's member list instead of its text
PARSERS: ParserPool | None = None
ZIP_FORMATS = {".docx", ".xlsx", ".xlsm", ".pptx"}

server = FastMCP("memento-documents", log_level="WARNING",
                 instructions="Read the files attached to the task (and the run's workspace) as text or markdown.")
extra_roots: list[str] = []


def _own_roots() -> list[str]:
    try:
        raw = json.loads(os.environ.get("MEMENTO_ALLOWED_PATHS") or "[]")
    except ValueError:
        raw = []
    return [p for p in [*(raw if isinstance(raw, list) else []), *extra_roots] if isinstance(p, str) and p]


def _call_paths(ctx: Context | None) -> list[str]:
    scoped = run_scope(ctx).get("allowed_paths") if ctx is not None else None
    return [p for p in scoped if isinstance(p, str) and p] if isinstance(scoped, list) else []


def allowed_roots(ctx: Context | None = None) -> list[Path]:
    """The roots a file of this call is walked down from: over stdio the calling run's and the
    server's own; over HTTP the server's own only (`narrowing` then applies the call's)."""
    if ctx is not None and over_http(ctx):
        return [Path(p).expanduser() for p in _own_roots()]
    return [Path(p).expanduser() for p in [*_call_paths(ctx), *_own_roots()]]


def narrowing(ctx: Context | None) -> list[PurePath] | None:
    """Over HTTP, the paths a call's `_meta` limits it to (inside the server's own roots), else None."""
    if ctx is None or not over_http(ctx):
        return None
    paths = _call_paths(ctx)
    return [PurePath(os.path.normpath(os.path.abspath(os.path.expanduser(p)))) for p in paths] or None


def _inside(path: str, limits: list[PurePath] | None) -> bool:
    if limits is None:
        return True
    wanted = PurePath(os.path.normpath(os.path.abspath(os.path.expanduser(path))))
    return any(wanted == limit or wanted.is_relative_to(limit) for limit in limits)


def cap(text: str, max_chars: int) -> str:
    limit = max(1, min(max_chars, MAX_CHARS))
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[truncated: showing {limit} of {len(text)} characters]"


def _table(rows: list[list[object]]) -> str:
    """Rows as a markdown table (the first row is the header)."""
    if not rows:
        return "(empty)"
    width = max(len(r) for r in rows)
    cells = [[("" if v is None else str(v)).replace("|", "\\|").replace("\n", " ") for v in r] + [""] * (width - len(r))
             for r in rows[:MAX_ROWS]]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    if len(rows) > MAX_ROWS:
        lines.append(f"[{len(rows) - MAX_ROWS} more rows not shown]")
    return "\n".join(lines)


def read_pdf(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n\n".join(f"## Page {n}\n{(page.extract_text() or '').strip()}" for n, page in enumerate(reader.pages, 1))


def read_docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    parts = []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
        text = paragraph.text.strip()
        if not text:
            continue
        level = style.removeprefix("heading ") if style.startswith("heading ") else ""
        parts.append(f"{'#' * int(level)} {text}" if level.isdigit() else text)
    for table in document.tables:
        parts.append(_table([[cell.text for cell in row.cells] for row in table.rows]))
    return "\n\n".join(parts)


def read_xlsx(data: bytes) -> str:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sheets = []
    for sheet in book.worksheets:
        rows = [list(row) for _, row in zip(range(MAX_ROWS + 1), sheet.iter_rows(values_only=True))]
        sheets.append(f"## Sheet {sheet.title}\n{_table(rows)}")
    book.close()
    return "\n\n".join(sheets)


def read_pptx(data: bytes) -> str:
    from pptx import Presentation

    slides = []
    for n, slide in enumerate(Presentation(io.BytesIO(data)).slides, 1):
        texts = [shape.text_frame.text.strip() for shape in slide.shapes
                 if shape.has_text_frame and shape.text_frame.text.strip()]
        slides.append(f"## Slide {n}\n" + "\n".join(texts))
    return "\n\n".join(slides)


def read_csv(data: bytes) -> str:
    text = data.decode("utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    return _table(list(csv.reader(io.StringIO(text), dialect)))


def read_json(data: bytes) -> str:
    return json.dumps(json.loads(data.decode("utf-8-sig")), indent=2, ensure_ascii=False)


def read_jsonl(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8-sig").splitlines() if line.strip()]
    return "\n".join(json.dumps(json.loads(line), ensure_ascii=False) for line in lines)


def read_xml(data: bytes) -> str:
    from defusedxml import ElementTree  # refuses entity expansion and external entities

    root = ElementTree.fromstring(data)
    lines = []

    def walk(node, depth: int) -> None:
        attrs = " ".join(f'{k}="{v}"' for k, v in node.attrib.items())
        text = (node.text or "").strip()
        lines.append(f"{'  ' * depth}<{node.tag}{' ' + attrs if attrs else ''}>{' ' + text if text else ''}")
        for child in node:
            walk(child, depth + 1)

    walk(root, 0)
    return "\n".join(lines)


def read_html(data: bytes) -> str:
    return html_to_markdown(data.decode("utf-8", errors="replace"))


def content_soup(html: str):
    """Parsed HTML without scripts, styles or other non-content elements."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "iframe", "svg", "template", "form"]):
        tag.decompose()
    return soup


def html_to_markdown(html: str) -> str:
    """Readable markdown from HTML."""
    from markdownify import markdownify

    text = markdownify(str(content_soup(html)), heading_style="ATX")
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip()).strip()


def html_to_text(html: str) -> str:
    """The visible text of HTML, one block per line."""
    text = content_soup(html).get_text("\n")
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def read_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


READERS: dict[str, Callable[[bytes], str]] = {
    ".pdf": read_pdf, ".docx": read_docx, ".xlsx": read_xlsx, ".xlsm": read_xlsx, ".pptx": read_pptx,
    ".csv": read_csv, ".tsv": read_csv, ".json": read_json, ".jsonl": read_jsonl, ".ndjson": read_jsonl,
    ".xml": read_xml, ".html": read_html, ".htm": read_html,
}


def convert(name: str, data: bytes) -> str:
    """A document's text (run in a parser worker; see `parse`)."""
    if name.endswith(LISTING):
        return _zip_listing(name.removesuffix(LISTING), data)
    suffix = PurePosixPath(name.lower()).suffix
    reader = READERS.get(suffix, read_text)
    if suffix in ZIP_FORMATS and zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_archive(archive, name)  # before the parser unpacks it all
    try:
        return reader(data)
    except MemoryError:
        raise  # the parser worker's limit: said as such, and the worker replaced
    except Exception as exc:  # a broken file of a known type: say which, not a traceback
        raise ValueError(f"cannot read {name} as {PurePosixPath(name).suffix or 'text'}: "
                         f"{type(exc).__name__}: {exc}") from None


def open_allowed(path: str, ctx: Context | None = None) -> tuple[str, bytes]:
    """(file name, contents) of an allowed file, read without following any link below its root
    and only if it is a regular file (see `workspace.open_beneath`)."""
    return open_within(path, allowed_roots(ctx), narrowing(ctx))


def open_within(path: str, roots: list[Path], limits: list[PurePath] | None) -> tuple[str, bytes]:
    """`open_allowed` with the call's roots already worked out (so it can run in a thread)."""
    if not _inside(path, limits):
        raise PathRefused(f"{path} is outside the files this run may read")
    root, parts = locate(roots, path)
    data = read_beneath(root, parts, MAX_FILE_BYTES, shown=path)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is over {MAX_FILE_BYTES} bytes; such files are not read")
    return parts[-1], data


def check_archive(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse archives that would unpack to far more than they weigh: by what the headers say,
    then by unpacking (headers can lie), counting, and stopping at the bound."""
    members = archive.infolist()
    total = sum(i.file_size for i in members)
    if total > MAX_UNPACKED_BYTES:
        raise ValueError(f"{name} unpacks to {total} bytes; at most {MAX_UNPACKED_BYTES} are read")
    for info in members:
        if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ValueError(f"{name}: member {info.filename} is compressed {info.file_size // max(info.compress_size, 1)}"
                             " times over; refused as a likely ZIP bomb")
    unpacked = 0
    for info in members:
        with archive.open(info) as member:
            while chunk := member.read(2**20):
                unpacked += len(chunk)
                if unpacked > MAX_UNPACKED_BYTES:
                    raise ValueError(f"{name} unpacks to more than {MAX_UNPACKED_BYTES} bytes (more than its "
                                     "headers say); at most that many are read")


@server.tool()
def list_documents(ctx: Context) -> str:
    """List the files this run may read."""
    out: list[str] = []
    limits = narrowing(ctx)
    for root in allowed_roots(ctx):
        if os.path.isfile(root):
            out.append(str(root))
        elif os.path.isdir(root):
            # Walked from held folder descriptors, never through a link, and bounded.
            entries, cut = list_beneath(root, ".", MAX_LISTED)
            out += [str(root / e) for e in entries if not e.endswith("/") and not PurePath(e).name.startswith(".memento")]
            if cut:
                out.append(f"[listing of {root} cut at {MAX_LISTED} entries]")
    return "\n".join(p for p in out if p.startswith("[") or _inside(p, limits)) or "(no files)"


def parser_pool() -> ParserPool:
    """The worker processes that parse documents (made on first use, with the server's limits)."""
    global PARSERS
    if PARSERS is None:
        PARSERS = ParserPool(convert, ParseLimits())
        atexit.register(PARSERS.close)
    return PARSERS


async def parse(name: str, data: bytes) -> str:
    """A document's text, parsed in a worker process under the server's limits, off the event loop,
    so other runs' calls are answered meanwhile."""
    return await anyio.to_thread.run_sync(parser_pool().parse, name, data)


@server.tool()
async def read_document(path: str, max_chars: int = MAX_CHARS, ctx: Context | None = None) -> str:
    """Read a document as text or markdown (PDF, DOCX, XLSX, CSV, PPTX, JSON, JSONL, XML, HTML,
    text). For a ZIP archive this lists its members; read one with read_zip_member."""
    name, data = await anyio.to_thread.run_sync(open_within, path, allowed_roots(ctx), narrowing(ctx))
    if zipfile.is_zipfile(io.BytesIO(data)) and Path(name).suffix.lower() not in ZIP_FORMATS:
        return cap(await parse(f"{name}{LISTING}", data), max_chars)
    return cap(await parse(name, data), max_chars)


def _zip_listing(name: str, data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = [["member", "bytes"]] + [[i.filename, i.file_size] for i in archive.infolist() if not i.is_dir()]
    return f"ZIP archive {name}, {len(rows) - 1} member(s):\n{_table(rows)}"


@server.tool()
async def read_zip_member(path: str, member: str, max_chars: int = MAX_CHARS, ctx: Context | None = None) -> str:
    """Read one member of a ZIP archive as text or markdown, by its name in the listing."""
    name, data = await anyio.to_thread.run_sync(open_within, path, allowed_roots(ctx), narrowing(ctx))
    return cap(await parse(member, await anyio.to_thread.run_sync(_unzip_member, name, data, member)), max_chars)


def _unzip_member(name: str, data: bytes, member: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise FileNotFoundError(f"{member} is not a member of {name}: see read_document for the list") from None
        if info.file_size > MAX_MEMBER_BYTES:
            raise ValueError(f"{member} unpacks to {info.file_size} bytes; at most {MAX_MEMBER_BYTES} are read")
        with archive.open(info) as handle:
            data = handle.read(MAX_MEMBER_BYTES + 1)  # the header's size may lie
        if len(data) > MAX_MEMBER_BYTES:
            raise ValueError(f"{member} unpacks to more than {MAX_MEMBER_BYTES} bytes")
    return data


def add_parse_options(parser: argparse.ArgumentParser) -> None:
    defaults = ParseLimits()
    parser.add_argument("--parse-memory-mb", type=int, default=defaults.memory_mb, metavar="MB",
                        help=f"address space of a parser worker (default {defaults.memory_mb})")
    parser.add_argument("--parse-cpu", type=int, default=defaults.cpu_s, metavar="S",
                        help=f"CPU seconds to parse one document (default {defaults.cpu_s})")
    parser.add_argument("--parse-timeout", type=float, default=defaults.wall_s, metavar="S",
                        help=f"seconds to parse one document, waiting included (default {defaults.wall_s:g})")
    parser.add_argument("--parse-workers", type=int, default=defaults.workers, metavar="N",
                        help=f"documents parsed at once (default {defaults.workers})")


def parse_limits(args: argparse.Namespace) -> ParseLimits:
    for name in ("parse_memory_mb", "parse_cpu", "parse_timeout", "parse_workers"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be a number above 0, got {value!r}")
    return ParseLimits(memory_mb=args.parse_memory_mb, cpu_s=args.parse_cpu, wall_s=args.parse_timeout,
                       workers=args.parse_workers)


def main() -> None:
    global PARSERS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--allow", action="append", default=[], metavar="PATH",
                        help="a file or folder the server may read (repeatable)")
    add_parse_options(parser)
    add_transport_options(parser)
    args = parser.parse_args()
    extra_roots.extend(args.allow)
    PARSERS = ParserPool(convert, parse_limits(args))
    atexit.register(PARSERS.close)
    run_server(server, args)


if __name__ == "__main__":
    main()

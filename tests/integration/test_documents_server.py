"""The documents server over stdio, on real files of every supported type made here."""

import json
import zipfile

import pytest

from tests.integration.conftest import call, stdio


def make_pdf(path):
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path))
    pdf.drawString(72, 720, "Quarterly revenue was 245 thousand.")
    pdf.showPage()
    pdf.drawString(72, 720, "Second page: costs were 120.")
    pdf.save()


def make_docx(path):
    import docx

    document = docx.Document()
    document.add_heading("Project notes", level=1)
    document.add_paragraph("The launch date is 14 March.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "item", "count"
    table.cell(1, 0).text, table.cell(1, 1).text = "chairs", "14"
    document.save(str(path))


def make_xlsx(path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sales"
    for row in (["region", "amount"], ["north", 120], ["south", 85]):
        sheet.append(row)
    book.save(str(path))


def make_pptx(path):
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Roadmap"
    slide.placeholders[1].text = "Ship the case bank in Q3"
    deck.save(str(path))


FILES = {
    "report.pdf": (make_pdf, ["## Page 1", "Quarterly revenue was 245 thousand.", "## Page 2", "costs were 120"]),
    "notes.docx": (make_docx, ["# Project notes", "The launch date is 14 March.", "| chairs | 14 |"]),
    "sales.xlsx": (make_xlsx, ["## Sheet Sales", "| region | amount |", "| north | 120 |"]),
    "deck.pptx": (make_pptx, ["## Slide 1", "Roadmap", "Ship the case bank in Q3"]),
    "data.csv": ("city;population\nOslo;709000\nBergen;291000\n", ["| city | population |", "| Bergen | 291000 |"]),
    "config.json": (json.dumps({"name": "memento", "k": 4}), ['"name": "memento"', '"k": 4']),
    "events.jsonl": ('{"a": 1}\n\n{"b": [2, 3]}\n', ['{"a": 1}', '{"b": [2, 3]}']),
    "feed.xml": ('<feed version="2"><entry id="7">First</entry></feed>', ['<feed version="2">', '<entry id="7"> First']),
    "page.html": ("<html><head><style>p{}</style><script>alert(1)</script></head><body><h1>Title</h1>"
                  "<p>Some <b>bold</b> text</p></body></html>", ["# Title", "Some **bold** text"]),
    "plain.txt": ("just text\nsecond line", ["just text\nsecond line"]),
}


@pytest.fixture
def docs(toolbox_for, tmp_path):
    folder = tmp_path / "attached"
    folder.mkdir()
    for name, (maker, _) in FILES.items():
        if callable(maker):
            maker(folder / name)
        else:
            (folder / name).write_text(maker, encoding="utf-8")
    with zipfile.ZipFile(folder / "bundle.zip", "w") as archive:
        archive.writestr("inner/readme.txt", "inside the zip")
        archive.writestr("inner/table.csv", "x,y\n1,2\n")
    (tmp_path / "outside.txt").write_text("not yours")
    box = toolbox_for({"documents": stdio("memento.mcp_servers.documents")}, allowed_paths=[str(folder)])
    box.folder = folder
    return box


@pytest.mark.parametrize("name", sorted(FILES))
def test_reads_every_document_type(docs, name):
    out = call(docs, "read_document", path=str(docs.folder / name))
    assert out.status == "success", out.text
    for expected in FILES[name][1]:
        assert expected in out.text
    if name == "page.html":
        assert "alert" not in out.text and "p{}" not in out.text


def test_zip_lists_members_and_reads_one(docs):
    listing = call(docs, "read_document", path=str(docs.folder / "bundle.zip"))
    assert "2 member(s)" in listing.text and "inner/readme.txt" in listing.text
    member = call(docs, "read_zip_member", path=str(docs.folder / "bundle.zip"), member="inner/table.csv")
    assert "| x | y |" in member.text and "| 1 | 2 |" in member.text
    missing = call(docs, "read_zip_member", path=str(docs.folder / "bundle.zip"), member="nope")
    assert missing.status == "error" and "not a member" in missing.text


def test_output_is_capped_and_says_so(docs):
    out = call(docs, "read_document", path=str(docs.folder / "plain.txt"), max_chars=9)
    assert out.text.startswith("just text") and "[truncated: showing 9 of 21 characters]" in out.text


def test_paths_outside_the_allowed_roots_are_refused(docs, tmp_path):
    for path in (str(tmp_path / "outside.txt"), str(docs.folder / ".." / "outside.txt"), "/etc/passwd"):
        out = call(docs, "read_document", path=path)
        assert out.status == "error" and "outside the files this run may read" in out.text
    (docs.folder / "sneaky").symlink_to(tmp_path / "outside.txt")
    out = call(docs, "read_document", path=str(docs.folder / "sneaky"))
    assert out.status == "error" and "outside" in out.text
    listed = call(docs, "list_documents").text
    assert "plain.txt" in listed and "outside.txt" not in listed.replace("sneaky", "")


def test_hostile_xml_is_refused(docs):
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            "<lolz>&lol2;</lolz>")
    (docs.folder / "bomb.xml").write_text(bomb)
    out = call(docs, "read_document", path=str(docs.folder / "bomb.xml"))
    assert out.status == "error" and "cannot read bomb.xml" in out.text


def test_a_broken_file_is_a_clear_error(docs):
    (docs.folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    out = call(docs, "read_document", path=str(docs.folder / "broken.pdf"))
    assert out.status == "error" and "cannot read broken.pdf as .pdf" in out.text


def test_zip_bombs_are_refused(docs):
    with zipfile.ZipFile(docs.folder / "bomb.docx", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"0" * (20 * 2**20))
    out = call(docs, "read_document", path=str(docs.folder / "bomb.docx"))
    assert out.status == "error" and "likely ZIP bomb" in out.text
    with zipfile.ZipFile(docs.folder / "outer.zip", "w") as archive:
        archive.write(docs.folder / "bomb.docx", "inner/bomb.docx")
    inner = call(docs, "read_zip_member", path=str(docs.folder / "outer.zip"), member="inner/bomb.docx")
    assert inner.status == "error" and "likely ZIP bomb" in inner.text
    assert call(docs, "list_documents").status == "success"  # the server is still there


def make_heavy_docx(path, megabytes=190):
    """A valid .docx whose document.xml is about `megabytes` MB of words from a small vocabulary:
    it compresses about 12 times, so it passes the ZIP checks (under 200 MB unpacked, under 200x)
    and a parser must hold all of it, several times over."""
    import random

    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda", "theta", "zeta", "iota",
             "rho", "tau", "phi", "chi", "psi"]
    # many small paragraphs: a parser's tree costs far more per byte than the text
    paragraph = "".join(f"<w:p><w:r><w:t>{' '.join(rng.choices(words, k=3))}</w:t></w:r></w:p>" for _ in range(20_000))
    header = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
              '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
                         'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="applica'
                         'tion/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="app'
                         'lication/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlf'
                         'ormats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        archive.writestr("_rels/.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
                         'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
                         'openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.x'
                         'ml"/></Relationships>')
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(header.encode())
            block = paragraph.encode()
            for _ in range(megabytes * 2**20 // len(block)):
                member.write(block)
            member.write(b"</w:body></w:document>")


def test_a_heavy_office_file_costs_its_limits_and_holds_no_one_up(toolbox_for, tmp_path):
    import threading
    import time

    heavy = tmp_path / "heavy.docx"
    make_heavy_docx(heavy)
    assert heavy.stat().st_size < 50 * 2**20  # under the largest file the server reads
    (tmp_path / "small.csv").write_text("a,b\n1,2\n")
    servers = {"documents": stdio("memento.mcp_servers.documents", "--allow", str(tmp_path), "--parse-memory-mb",
                                  "1024", "--parse-cpu", "20", "--parse-timeout", "40")}
    box = toolbox_for(servers)
    outcome = {}

    def read_heavy():
        started = time.monotonic()
        outcome["answer"] = call(box, "read_document", path=str(heavy))
        outcome["seconds"] = time.monotonic() - started

    call(box, "read_document", path=str(tmp_path / "small.csv"))  # the workers are started
    reader = threading.Thread(target=read_heavy)
    reader.start()
    time.sleep(0.5)  # the heavy file is being read and parsed now
    others = []
    while reader.is_alive() and len(others) < 5:
        started = time.monotonic()
        answer = call(box, "read_document", path=str(tmp_path / "small.csv"))
        listed = call(box, "list_documents")
        others.append((time.monotonic() - started, answer.text, listed.text))
    reader.join(timeout=120)
    answer = outcome["answer"]
    assert answer.status == "error" and "heavy.docx" in answer.text, answer.text
    assert "memory" in answer.text or "CPU" in answer.text or "longer than" in answer.text
    assert outcome["seconds"] < 60
    assert others, "the heavy file was done before anything else could be asked"
    for seconds, text, listed in others:
        assert seconds < 5 and "| 1 | 2 |" in text and "small.csv" in listed  # answered meanwhile
    assert "| 1 | 2 |" in call(box, "read_document", path=str(tmp_path / "small.csv")).text  # and after

"""`memento bench make-world`: an offline task suite where case memory must matter.

Rules of the generator (the README repeats them):

- A *family* is a domain (a purchase log, a shipment manifest, ...), an aggregate (total,
  average, largest, smallest, spread), a file kind (CSV, JSON, JSONL, XLSX), a set of
  `choices` plausible numeric columns (list_cost, net_cost, landed_cost, ...) and one right
  column among them. Its right procedure is three tool steps: read the file with the document
  reader, take the right column's values, compute the aggregate with the calculator.
- A family's tasks share its wording (two question templates of its aggregate, its domain's
  nouns and a cue word such as "retail") and differ in their data and in the month or quarter
  they name. Every task attaches one file holding an id column, a label column and all the
  plausible columns, with different values per task.
- A task's answer is what the real MCP tools return along the right procedure: the documents
  server reads the file, the column's values are taken from what it returned, and the math
  server computes the aggregate. The data is drawn again until every plausible column gives a
  different answer, so only the right procedure is right. The answer lists the calculator's
  exact output and its decimal form.
- The question never names the column, so without a useful past case a planner must guess
  among the plausible ones: about one in `choices` is right.
- Plain suites give each family its own domain (domains are reused, with another aggregate,
  only when there are more families than domains) and cue. Misleading suites build families in
  look-alike groups of `group_size` (3 by default): the same domain, aggregate, file kind,
  templates and plausible columns, a different right column each, and only the cue word
  (retail / wholesale / online, ...) to tell them apart.
- With a test file (`test_out`), `test_tasks` of each family's tasks go there: other tasks of the
  same families, with their own data and months or quarters that family's training tasks never
  name, so no test task shares its text or its data file with a training task. A family's
  sixteen months and quarters are shuffled and split between the two files.
- Tasks are shuffled, so families interleave. The family, its look-alikes, the right column and
  the procedure are kept in each task's `metadata`, which the benchmark records but never shows
  the agent.
- Everything is drawn from `random.Random(seed)`: the same seed writes the same suite and the
  same split; another seed gives other families, wording and data.

Wording options (issue #23: worlds worded the way people write). All off by default, and then
the suite is byte for byte what it was before they existed. They change questions only: their
draws come from a second generator seeded by the seed (`random.Random(f"memento-world-wording:
{seed}")`), so the families, data, answers, files, ids and split are those of the plain world of
the same seed, and the same seed and options write the same files.

- `cue_wordings` N: a family's cue is said N ways, its cue word and N - 1 paraphrases drawn from
  `CUE_WORDINGS` (retail / in-store / shop-floor ...), one chosen per task, in both files. No
  phrase, and no word but a few function words, belongs to two cues of one group (nor, as the
  vocabulary is written, to two cues at all).
- `noise` N: each task carries 0..N irrelevant fragments (who asked, for what, by when, which
  team), each put before or after the question. Their vocabulary holds no aggregate word, no cue
  word and no month or quarter; the same fragments turn up in unrelated families on purpose.
- `reorder`: questions come from `FRAMES`, with the cue at the start, in the middle or at the
  end, and one of two phrasings of the aggregate: twelve wordings per aggregate, not two.
- `shared_words`: look-alike groups (each family, in a plain world) are paired off, and the
  groups of a pair share a qualifier of the document and a project name ("the attached
  provisional ... log for March (Heron project)"), so word overlap alone points at another group.
- Each task's `metadata.wording` records what was used: the cue wording, the template, the
  fragments and where they went, the shared words. Every question still names its aggregate with
  words `table_skills.asked_operation` reads, and its file is attached as before.
- `vocabulary_problems()` checks the rules of this vocabulary; the tests run it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from memento.graph.context import default_mcp_servers
from memento.llm import table_skills as tables

FORMATS = ("csv", "json", "jsonl", "xlsx")
MARKER = ".memento-world"
MAX_REDRAWS = 50


@dataclass(frozen=True)
class Domain:
    name: str
    document: str
    quantity: str
    columns: tuple[str, ...]
    label: str
    labels: tuple[str, ...]
    low: float
    high: float


DOMAINS = (
    Domain("purchases", "purchase log", "cost", ("list_cost", "net_cost", "landed_cost", "quoted_cost", "invoiced_cost"),
           "supplier", ("Acme", "Borealis", "Castor", "Dunmore", "Elkins"), 5, 900),
    Domain("shipments", "shipment manifest", "weight",
           ("gross_weight", "net_weight", "billed_weight", "declared_weight", "scale_weight"),
           "carrier", ("Skyline", "Portway", "Tidal", "Overland"), 1, 400),
    Domain("payroll", "payroll sheet", "pay", ("base_pay", "gross_pay", "net_pay", "contract_pay", "scheduled_pay"),
           "team", ("ops", "design", "support", "research"), 900, 5200),
    Domain("sensors", "sensor export", "reading",
           ("raw_reading", "calibrated_reading", "smoothed_reading", "probe_reading", "logged_reading"),
           "sensor", ("S1", "S2", "S3", "S4", "S5"), 10, 90),
    Domain("energy", "meter report", "usage",
           ("metered_usage", "billed_usage", "estimated_usage", "adjusted_usage", "recorded_usage"),
           "building", ("Annex", "Hall", "Lab", "Depot"), 40, 2400),
    Domain("sales", "sales ledger", "revenue",
           ("gross_revenue", "net_revenue", "booked_revenue", "recognised_revenue", "invoiced_revenue"),
           "channel", ("web", "store", "partner", "phone"), 100, 9000),
    Domain("rainfall", "weather station log", "rainfall",
           ("gauge_rainfall", "radar_rainfall", "corrected_rainfall", "reported_rainfall", "station_rainfall"),
           "station", ("Ridge", "Valley", "Coast", "Airfield"), 0.5, 60),
    Domain("traffic", "web traffic report", "visits",
           ("unique_visits", "session_visits", "filtered_visits", "counted_visits", "logged_visits"),
           "page", ("home", "pricing", "docs", "blog", "careers"), 50, 7000),
    Domain("inventory", "stock count", "stock level",
           ("on_hand_level", "available_level", "counted_level", "system_level", "audited_level"),
           "warehouse", ("Leeds", "Derby", "Hull", "York"), 3, 800),
    Domain("fleet", "fuel log", "fuel", ("pumped_fuel", "billed_fuel", "metered_fuel", "logged_fuel", "estimated_fuel"),
           "vehicle", ("van-1", "van-2", "truck-1", "truck-2"), 20, 180),
    Domain("clinic", "clinic register", "waiting time",
           ("triage_wait", "queue_wait", "reported_wait", "booked_wait", "measured_wait"),
           "clinic", ("east", "west", "central", "harbour"), 4, 140),
    Domain("donations", "donation record", "gift",
           ("pledged_gift", "received_gift", "matched_gift", "cleared_gift", "declared_gift"),
           "campaign", ("spring", "gala", "online", "schools"), 10, 2500),
)

# Question templates per aggregate; each names the aggregate with words `table_skills` reads.
TEMPLATES = {
    "sum": ("What is the total {quantity} in the attached {document} for {context}?",
            "Add up the {quantity} in the attached {document} for {context}: what is the total?",
            "What does the {quantity} in the attached {document} for {context} come to in total?"),
    "mean": ("What is the average {quantity} in the attached {document} for {context}?",
             "Across the entries of the attached {document} for {context}, what is the mean {quantity}?",
             "What is the {quantity} on average in the attached {document} for {context}?"),
    "maximum": ("What is the largest {quantity} in the attached {document} for {context}?",
                "What is the highest {quantity} recorded in the attached {document} for {context}?",
                "Find the biggest {quantity} in the attached {document} for {context}."),
    "minimum": ("What is the smallest {quantity} in the attached {document} for {context}?",
                "What is the lowest {quantity} recorded in the attached {document} for {context}?",
                "Find the minimum {quantity} in the attached {document} for {context}."),
    "range": ("What is the spread of the {quantity} in the attached {document} for {context}?",
              "How wide is the range of {quantity} in the attached {document} for {context}?",
              "Give the spread between the extremes of the {quantity} in the attached {document} for {context}."),
}
# Cue words, in groups a look-alike group draws from (so a group's cues are of one kind).
CUE_GROUPS = (("retail", "wholesale", "online", "trade", "catalogue"),
              ("domestic", "export", "import", "transit", "bonded"),
              ("northern", "southern", "eastern", "western", "coastal"),
              ("weekday", "weekend", "holiday", "overnight", "seasonal"),
              ("morning", "evening", "afternoon", "night", "midday"),
              ("primary", "secondary", "backup", "auxiliary", "reserve"),
              ("regional", "central", "local", "district", "metro"),
              ("internal", "external", "partner", "vendor", "contract"))
CONTEXTS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
            "November", "December", "the first quarter", "the second quarter", "the third quarter",
            "the fourth quarter")

# -- wording options ---------------------------------------------------------------------------
# Paraphrases of each cue (the cue word itself is the first wording). Within a cue group no word
# is shared between two cues, so look-alike families never say their cue the same way.
CUE_WORDINGS: dict[str, tuple[str, ...]] = {
    "retail": ("in-store", "shop-floor", "storefront", "counter-sale"),
    "wholesale": ("bulk", "bulk-lot", "cash-carry", "pallet-lot"),
    "online": ("web", "e-commerce", "internet", "digital"),
    "trade": ("trade-account", "B2B", "business-customer", "professional-buyer"),
    "catalogue": ("mail-order", "catalog", "brochure", "postal"),
    "domestic": ("home-market", "inland", "national", "nationwide"),
    "export": ("outbound", "outgoing", "shipped-abroad", "exported"),
    "import": ("inbound", "incoming", "foreign-sourced", "imported"),
    "transit": ("en-route", "pass-through", "transhipment", "through-route"),
    "bonded": ("duty-suspended", "customs-controlled", "under-bond", "duty-deferred"),
    "northern": ("north", "northside", "north-zone", "northerly"),
    "southern": ("south", "southside", "southerly", "deep-south"),
    "eastern": ("east", "eastside", "easterly", "east-sector"),
    "western": ("west", "westside", "westerly", "far-west"),
    "coastal": ("seaside", "shoreline", "waterfront", "seaboard"),
    "weekday": ("workday", "midweek", "mon-fri", "weekdays"),
    "weekend": ("saturday-sunday", "sat-sun", "non-working", "leisure-days"),
    "holiday": ("bank-holiday", "public-holiday", "festive", "vacation"),
    "overnight": ("after-dark", "graveyard-shift", "small-hours", "nocturnal"),
    "seasonal": ("season-bound", "harvest", "yearly-cycle", "period-specific"),
    "morning": ("dawn", "daybreak", "sunrise", "breakfast-time"),
    "evening": ("dusk", "twilight", "sundown", "teatime"),
    "afternoon": ("post-lunch", "late-day", "siesta", "mid-afternoon"),
    "night": ("nighttime", "midnight", "nightly", "moonlit"),
    "midday": ("noon", "noontime", "meridian", "noonday"),
    "primary": ("main", "principal", "lead", "chief"),
    "secondary": ("subsidiary", "supporting", "next-tier", "subordinate"),
    "backup": ("standby", "fallback", "failover", "spare"),
    "auxiliary": ("ancillary", "supplementary", "helper", "assist"),
    "reserve": ("reserved", "contingency", "stockpile", "set-aside"),
    "regional": ("area-wide", "province-level", "provincial", "territory"),
    "central": ("head-office", "headquarters", "core", "hub"),
    "local": ("neighbourhood", "nearby", "community", "hometown"),
    "district": ("borough", "ward", "precinct", "county"),
    "metro": ("metropolitan", "city", "urban", "downtown"),
    "internal": ("in-house", "intra-company", "insourced", "self-run"),
    "external": ("outside", "arms-length", "outsourced", "offsite"),
    "partner": ("affiliate", "alliance", "joint-venture", "co-branded"),
    "vendor": ("seller", "merchant", "provider", "distributor"),
    "contract": ("contracted", "freelance", "agency", "fixed-term"),
}
# Function words a cue wording may share with other text.
FUNCTION_WORDS = frozenset({"a", "an", "and", "by", "for", "from", "in", "of", "on", "the", "to"})
# `reorder` frames: {agg} is one of the aggregate's phrasings, {cue} the cue wording.
FRAMES = {
    "start": ("{cue} {document} for {context}: what is the {agg}?",
              "{cue} only: what is the {agg} in the attached {document} for {context}?"),
    "middle": ("What is the {agg} in the attached {cue} {document} for {context}?",
               "For {context}, what is the {agg} across the {cue} entries of the attached {document}?"),
    "end": ("What is the {agg} in the attached {document} for {context}, {cue} side only?",
            "Using the attached {document} for {context}, give the {agg} of the {cue} records."),
}
AGGREGATE_PHRASES = {"sum": ("total {quantity}", "sum of the {quantity}"),
                     "mean": ("average {quantity}", "mean {quantity}"),
                     "maximum": ("largest {quantity}", "highest {quantity}"),
                     "minimum": ("smallest {quantity}", "lowest {quantity}"),
                     "range": ("spread of the {quantity}", "range of the {quantity}")}
# Words that name an aggregate, the planner's and their kin: no noise fragment, cue wording or
# shared word may hold one.
AGGREGATE_WORDS = frozenset({"total", "totals", "sum", "sums", "add", "altogether", "combined", "overall", "average",
                             "mean", "median", "largest", "highest", "biggest", "max", "maximum", "peak", "top",
                             "smallest", "lowest", "least", "min", "minimum", "spread", "range", "extremes", "count"})
NOISE_FRAGMENTS = ("{person} from {team} needs this for {purpose}.", "This is for {purpose}.",
                   "Needed {deadline}, please.", "Request from the {team} team.", "{person} asked for it {deadline}.",
                   "Background: {team} is preparing {purpose}.", "Copying {person}, who owns {purpose}.",
                   "No rush, but {deadline} would help.")
NOISE_WORDS = {
    "person": ("Priya", "Tomasz", "Amara", "Jonas", "Keiko", "Mateo", "Ines", "Olu", "Sven", "Leila", "Ravi", "Hanna"),
    "team": ("audit", "finance", "procurement", "legal", "strategy", "facilities", "analytics", "risk", "treasury"),
    "purpose": ("the compliance review", "a slide for the board", "the budget meeting", "the investor update",
                "a client call", "the planning workshop", "the audit file", "an insurance claim", "the tender pack",
                "a press briefing"),
    "deadline": ("by Friday", "by Thursday", "today", "by tomorrow", "before the stand-up", "by end of play",
                 "on Tuesday"),
}
MAX_NOISE = 4
# `shared_words`: a qualifier of the document and a project name, each given to a pair of groups.
SHARED_TAGS = ("provisional", "revised", "draft", "unaudited", "restated", "certified", "preliminary", "corrected",
               "archived", "interim", "amended", "reconciled")
SHARED_PROJECTS = ("Heron", "Atlas", "Kestrel", "Orion", "Juniper", "Cobalt", "Lantern", "Willow", "Granite", "Falcon",
                   "Saffron", "Tundra")


class WorldError(ValueError):
    """The world cannot be made as asked; the message says what to change."""


@dataclass
class Family:
    id: str
    domain: Domain
    operation: str
    format: str
    plausible: list[str]
    column: str
    cue: str
    templates: list[str]
    group: str | None = None
    lookalikes: list[str] = field(default_factory=list)


@dataclass
class WorldTask:
    family: Family
    question: str
    rows: list[dict[str, Any]]
    split: str = "train"
    id: str = ""
    answer: list[str] = field(default_factory=list)
    file: str = ""
    context: str = ""
    template: str = ""
    wording: dict[str, Any] | None = None  # what the wording options chose; None without them


@dataclass(frozen=True)
class Wording:
    """The wording options (see the module docstring); the defaults word a world as before them."""

    cue_wordings: int = 1
    noise: int = 0
    reorder: bool = False
    shared_words: bool = False

    @property
    def plain(self) -> bool:
        return self == Wording()


def make_families(rng: random.Random, families: int, choices: int, misleading: bool, group_size: int = 2) -> list[Family]:
    size = group_size if misleading else 1
    if misleading and families % size:
        raise WorldError(f"--families {families}: a misleading world makes look-alike groups of {size}, so give "
                         f"a multiple of {size}")
    domains = rng.sample(DOMAINS, len(DOMAINS))
    cue_groups = rng.sample(CUE_GROUPS, len(CUE_GROUPS))
    cues = [cue for group in cue_groups for cue in group]
    used: dict[str, set[str]] = {}
    out: list[Family] = []
    for g in range(families // size):
        domain = domains[g % len(domains)]
        # A domain used again (more families than domains) takes another aggregate, so wording differs.
        operation = rng.choice([op for op in TEMPLATES if op not in used.setdefault(domain.name, set())])
        used[domain.name].add(operation)
        kind = rng.choice(FORMATS)
        plausible = rng.sample(domain.columns, choices)
        templates = rng.sample(TEMPLATES[operation], 2)
        if misleading:
            right = rng.sample(plausible, size)
            group_cues = rng.sample(cue_groups[g % len(cue_groups)], size)
            ids = [f"F{len(out) + i + 1:02d}" for i in range(size)]
            for i in range(size):
                out.append(Family(ids[i], domain, operation, kind, plausible, right[i], group_cues[i], templates,
                                  group=f"G{g + 1}", lookalikes=[f for f in ids if f != ids[i]]))
        else:
            out.append(Family(f"F{len(out) + 1:02d}", domain, operation, kind, plausible, rng.choice(plausible),
                              cues[g % len(cues)], templates))
    return out


def _rows(rng: random.Random, family: Family, prefix: str) -> list[dict[str, Any]]:
    domain = family.domain
    rows = []
    for n in range(rng.randint(8, 12)):
        row: dict[str, Any] = {"id": f"{prefix}-{n + 1:02d}", domain.label: rng.choice(domain.labels)}
        for column in family.plausible:
            row[column] = f"{rng.uniform(domain.low, domain.high):.2f}"
        rows.append(row)
    return rows


def write_table(path: Path, kind: str, rows: list[dict[str, Any]], numeric: list[str]) -> None:
    """Write rows (values as text) as a table file; `numeric` columns become numbers in JSON and XLSX."""
    header = list(rows[0])

    def typed(row: dict[str, Any]) -> dict[str, Any]:
        return {k: float(v) if k in numeric else v for k, v in row.items()}

    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([row[k] for k in header] for row in rows)
        path.write_text(buffer.getvalue(), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps([typed(row) for row in rows], indent=1) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(typed(row)) + "\n" for row in rows), encoding="utf-8")
    elif kind == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.title = "data"
        sheet.append(header)
        for row in rows:
            sheet.append([typed(row)[k] for k in header])
        book.properties.created = datetime(2025, 1, 1)
        packed = io.BytesIO()
        book.save(packed)
        _repack_fixed_time(packed.getvalue(), path)
    else:
        raise WorldError(f"unknown file kind {kind!r}")


def _repack_fixed_time(xlsx: bytes, path: Path) -> None:
    """Write an XLSX with fixed timestamps (openpyxl stamps the save time), so a seed gives the
    same bytes every time."""
    with zipfile.ZipFile(io.BytesIO(xlsx)) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>2025-01-01T00:00:00Z", data)
            target.writestr(zipfile.ZipInfo(info.filename, date_time=(2025, 1, 1, 0, 0, 0)), data,
                            compress_type=zipfile.ZIP_DEFLATED)


def answers_by_tools(toolbox: Any, path: Path, columns: list[str], operation: str) -> dict[str, str]:
    """The answer of the procedure for each column, from the real tools: the documents server
    reads the file, the values are taken from its output, the math server aggregates them."""
    read = toolbox.call({"name": "read_document", "args": {"path": str(path)}, "id": "read"}, 100_000)
    if read.status == "error":
        raise WorldError(f"the documents server could not read {path}: {read.text}")
    out = {}
    for column in columns:
        values = tables.column_values(read.text, column)
        expression = tables.aggregate_expression(operation, values)
        result = toolbox.call({"name": "calculate", "args": {"expression": expression}, "id": column}, 100_000)
        if result.status == "error":
            raise WorldError(f"the math server could not compute {expression!r}: {result.text}")
        out[column] = result.text.strip()
    return out


def accepted_answers(tool_output: str) -> list[str]:
    """The calculator's output, and its decimal form when it also gives an exact fraction."""
    short = tool_output.split(" (exactly ")[0].strip()
    return [tool_output] if short == tool_output else [tool_output, short]


def _questions(rng: random.Random, family: Family, count: int, contexts: list[str], split: str) -> list[WorldTask]:
    """`count` tasks of a family, cycling through `contexts` (each named once per cycle)."""
    out = []
    for i in range(count):
        template, context = rng.choice(family.templates), contexts[i % len(contexts)]
        question = template.format(quantity=family.domain.quantity, context=context,
                                   document=f"{family.cue} {family.domain.document}")
        out.append(WorldTask(family, question, [], split, context=context, template=template))
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def vocabulary_problems() -> list[str]:
    """What breaks the rules of the wording vocabulary (empty when nothing does): cue wordings
    distinct between the cues of a group, and no aggregate, cue, month or quarter word where it
    would mislead the planner or leak a family."""
    problems = []
    cue_words: dict[str, str] = {}
    context_words = _words(" ".join(CONTEXTS)) - FUNCTION_WORDS
    for group in CUE_GROUPS:
        for cue in group:
            wordings = (cue, *CUE_WORDINGS.get(cue, ()))
            if len(set(wordings)) < 5:
                problems.append(f"cue {cue!r} needs 4 distinct paraphrases")
            for phrase in wordings:
                if tables.asked_operation(phrase) or _words(phrase) & (AGGREGATE_WORDS | context_words):
                    problems.append(f"cue wording {phrase!r} holds an aggregate, month or quarter word")
                for word in _words(phrase) - FUNCTION_WORDS:
                    if cue_words.setdefault(word, cue) != cue:
                        problems.append(f"the word {word!r} belongs to cues {cue_words[word]!r} and {cue!r}")
    if set(CUE_WORDINGS) != {cue for group in CUE_GROUPS for cue in group}:
        problems.append("CUE_WORDINGS must give paraphrases for the cues of CUE_GROUPS, and only for them")
    noise = list(NOISE_FRAGMENTS) + [w for words in NOISE_WORDS.values() for w in words]
    shared = list(SHARED_TAGS) + list(SHARED_PROJECTS)
    frames = [frame.format(agg="", cue="", document="", context="") for frames in FRAMES.values() for frame in frames]
    for kind, texts in (("noise", noise), ("shared word", shared), ("frame", frames)):
        for text in texts:
            bad = _words(text) & (AGGREGATE_WORDS | set(cue_words) | context_words)
            if bad or tables.asked_operation(text):
                problems.append(f"{kind} {text!r} holds an aggregate, cue, month or quarter word: {sorted(bad)}")
    for operation, phrases in AGGREGATE_PHRASES.items():
        problems += [f"{phrase!r} does not read as {operation}" for phrase in phrases
                     if tables.asked_operation(phrase) != operation]
    groups = 2 * len(DOMAINS)  # a plain world's families, each its own group
    if min(len(SHARED_TAGS), len(SHARED_PROJECTS)) < groups // 2:
        problems.append(f"shared words: {groups // 2} pairs of groups need as many tags and projects")
    return problems


def _shared_words(rng: random.Random, families: list[Family]) -> dict[str, tuple[str, str]]:
    """Pair off the groups (each family, in a plain world; the last three together when their
    number is odd) and give each pair a tag and a project: family id -> (tag, project)."""
    groups = list(dict.fromkeys(family.group or family.id for family in families))
    rng.shuffle(groups)
    pairs = [groups[i:i + 2] for i in range(0, len(groups), 2)]
    if len(pairs) > 1 and len(pairs[-1]) == 1:
        last = pairs.pop()
        pairs[-1] += last
    tags, projects = rng.sample(SHARED_TAGS, len(pairs)), rng.sample(SHARED_PROJECTS, len(pairs))
    given = {group: (tags[i], projects[i]) for i, pair in enumerate(pairs) for group in pair}
    return {family.id: given[family.group or family.id] for family in families}


def _reword(rng: random.Random, families: list[Family], splits: dict[str, list[WorldTask]], wording: Wording) -> None:
    """Word every task again with the wording options, drawing from `rng` (not the data's generator)."""
    cues = {family.id: [family.cue, *rng.sample(CUE_WORDINGS[family.cue], wording.cue_wordings - 1)]
            for family in families}
    shared = _shared_words(rng, families) if wording.shared_words else {}
    for split in ("train", "test"):
        for task in splits[split]:
            family = task.family
            cue = rng.choice(cues[family.id])
            tag, project = shared.get(family.id, (None, None))
            document = f"{tag} {family.domain.document}" if tag else family.domain.document
            context = f"{task.context} ({project} project)" if project else task.context
            if wording.reorder:
                position = rng.choice(tuple(FRAMES))
                number = rng.randrange(len(FRAMES[position]))
                phrase = rng.choice(AGGREGATE_PHRASES[family.operation])
                question = FRAMES[position][number].format(
                    agg=phrase.format(quantity=family.domain.quantity), cue=cue, document=document, context=context)
                question = question[0].upper() + question[1:]
                template = f"{position}-{number + 1}"
            else:
                question = task.template.format(quantity=family.domain.quantity, context=context,
                                                document=f"{tag} {cue} {family.domain.document}" if tag
                                                else f"{cue} {family.domain.document}")
                template = f"middle-t{TEMPLATES[family.operation].index(task.template) + 1}"
            fragments = []
            for text in rng.sample(NOISE_FRAGMENTS, rng.randint(0, wording.noise)):
                filled = text.format(**{slot: rng.choice(words) for slot, words in NOISE_WORDS.items()})
                fragments.append({"text": filled[0].upper() + filled[1:], "position": rng.choice(("before", "after"))})
            task.question = " ".join([f["text"] for f in fragments if f["position"] == "before"] + [question]
                                     + [f["text"] for f in fragments if f["position"] == "after"])
            task.wording = {"cue": cue, "cue_wordings": cues[family.id], "template": template, "fragments": fragments,
                            "shared": [tag, project] if tag else []}


def make_world(seed: int, out: str | Path, families: int = 9, tasks: int = 16, choices: int = 5,
               misleading: bool = False, group_size: int = 3, test_out: str | Path | None = None,
               test_tasks: int | None = None, cue_wordings: int = 1, noise: int = 0, reorder: bool = False,
               shared_words: bool = False) -> dict[str, Any]:
    """Write the suite to `out` (JSONL) and its files to `<stem>_files/` beside it, and with
    `test_out` a test suite the same way; return a report. The wording options (`cue_wordings`,
    `noise`, `reorder`, `shared_words`; see the module docstring) change the questions only."""
    from memento.mcp_servers.client import Toolbox

    if not 1 <= families <= 2 * len(DOMAINS):
        raise WorldError(f"--families must be between 1 and {2 * len(DOMAINS)}, got {families}")
    if not 1 <= tasks <= 200:
        raise WorldError(f"--tasks (per family) must be between 1 and 200, got {tasks}")
    if not 2 <= choices <= 5:
        raise WorldError(f"--choices must be between 2 and 5, got {choices}")
    if misleading and not 2 <= group_size <= choices:
        raise WorldError(f"--group-size must be between 2 and --choices ({choices}): each family of a look-alike "
                         f"group needs its own right column; got {group_size}")
    if misleading and families // group_size > len(CUE_GROUPS):
        raise WorldError(f"--families {families}: at most {len(CUE_GROUPS)} look-alike groups can be made")
    most = 1 + min(map(len, CUE_WORDINGS.values()))
    if not 1 <= cue_wordings <= most:
        raise WorldError(f"--cue-wordings must be between 1 and {most}, got {cue_wordings}")
    if not 0 <= noise <= MAX_NOISE:
        raise WorldError(f"--noise must be between 0 and {MAX_NOISE}, got {noise}")
    wording = Wording(cue_wordings, noise, bool(reorder), bool(shared_words))
    targets = [_target(out, "--out")]
    if test_out is not None:
        test_tasks = tasks // 2 if test_tasks is None else test_tasks
        if not 1 <= test_tasks < tasks:
            raise WorldError(f"--test-tasks must be between 1 and --tasks - 1 ({tasks - 1}), got {test_tasks}")
        targets.append(_target(test_out, "--test-out"))
        if targets[0] == targets[1]:
            raise WorldError("--test-out must name another file than --out")
    else:
        test_tasks = 0

    rng = random.Random(seed)
    family_list = make_families(rng, families, choices, misleading, group_size)
    splits: dict[str, list[WorldTask]] = {"train": [], "test": []}
    for family in family_list:
        contexts = rng.sample(CONTEXTS, len(CONTEXTS))
        # Months and quarters split between the files in proportion to their tasks, so a test task
        # never names one its family's training tasks name.
        held = min(len(CONTEXTS) - 1, max(1, round(len(CONTEXTS) * test_tasks / tasks))) if test_tasks else 0
        for split, count, named in (("train", tasks - test_tasks, contexts[:len(CONTEXTS) - held]),
                                    ("test", test_tasks, contexts[len(CONTEXTS) - held:])):
            splits[split] += _questions(rng, family, count, named, split)
    for world in splits.values():
        rng.shuffle(world)
    if not wording.plain:
        _reword(random.Random(f"memento-world-wording:{seed}"), family_list, splits, wording)

    written: list[dict[str, Any]] = []
    staged: list[tuple[Path, Path, Path, Path]] = []
    try:
        servers = {name: conf for name, conf in default_mcp_servers().items() if name in ("documents", "math")}
        stagings = []
        for target in targets:
            folder = target.with_name(f"{target.stem}_files")
            staging = Path(tempfile.mkdtemp(prefix=f".{target.stem}_files.", dir=target.parent))
            stagings.append(staging)
            (staging / MARKER).write_text("made by memento bench make-world\n", encoding="utf-8")
            staged.append((target, folder, staging, target.with_name(f".{target.name}.partial")))
        with Toolbox(servers, allowed_paths=[str(p) for p in stagings]) as toolbox:
            for (_, folder, staging, tmp), split in zip(staged, ("train", "test")):
                for n, task in enumerate(splits[split], 1):
                    task.id = f"s{seed}-{'t' if split == 'train' else 'x'}{n:03d}"
                    task.file = f"{task.id}.{task.family.format}"
                    _draw_data(rng, toolbox, task, staging / task.file)
                lines = [json.dumps(_task_line(task, folder.name), ensure_ascii=False) for task in splits[split]]
                tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for target, folder, staging, tmp in staged:
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
            os.replace(tmp, target)
            written.append({"out": str(target), "files": str(folder)})
    except BaseException:
        for _, _, staging, tmp in staged:
            shutil.rmtree(staging, ignore_errors=True)
            tmp.unlink(missing_ok=True)
        raise
    report = {"tasks": len(splits["train"]), "families": len(family_list), "choices": choices,
              "misleading": misleading, "group_size": group_size if misleading else 1, "seed": seed,
              "out": written[0]["out"], "files": written[0]["files"]}
    if test_out is not None:
        report.update({"test_tasks": len(splits["test"]), "test_out": written[1]["out"], "test_files": written[1]["files"]})
    if not wording.plain:
        report["wording"] = {"cue_wordings": cue_wordings, "noise": noise, "reorder": wording.reorder,
                             "shared_words": wording.shared_words}
    return report


def _target(out: str | Path, flag: str) -> Path:
    out = Path(out).expanduser().absolute()
    if out.suffix != ".jsonl":
        raise WorldError(f"{flag} {out} must name a .jsonl file")
    if out.is_dir():
        raise WorldError(f"{flag} {out} is a folder: give a file name ending in .jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.with_name(f"{out.stem}_files")
    if folder.exists() and not (folder / MARKER).exists():
        raise WorldError(f"{folder} exists and was not made by make-world: choose another {flag}")
    return out


def _draw_data(rng: random.Random, toolbox: Any, task: WorldTask, path: Path) -> None:
    """Draw the task's table until every plausible column gives another answer; set its answer."""
    for _ in range(MAX_REDRAWS):
        task.rows = _rows(rng, task.family, task.id)
        write_table(path, task.family.format, task.rows, task.family.plausible)
        answers = answers_by_tools(toolbox, path, task.family.plausible, task.family.operation)
        if len(set(answers.values())) == len(answers):
            task.answer = accepted_answers(answers[task.family.column])
            return
    raise WorldError(f"could not draw data that tells the columns of task {task.id} apart")


def _task_line(task: WorldTask, folder: str) -> dict[str, Any]:
    family = task.family
    relative = f"{folder}/{task.file}"
    line = {
        "id": task.id, "question": task.question, "answer": task.answer, "files": [relative],
        "metadata": {
            "family": family.id, "group": family.group, "lookalikes": family.lookalikes, "split": task.split,
            "domain": family.domain.name, "cue": family.cue,
            "operation": family.operation, "format": family.format, "column": family.column,
            "plausible": family.plausible, "procedure": tables.procedure(relative, family.column, family.operation),
        },
    }
    if task.wording is not None:
        line["metadata"]["wording"] = task.wording
    return line


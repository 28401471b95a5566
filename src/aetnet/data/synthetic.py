# Copyright 2025 The aetnet developers.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Synthetic FUNSD-like forms: the embedded default dataset, which needs no download.

Each form is a white page rendered with Pillow's built-in font: a title (HEADER), sometimes a letterhead, an
instruction line and a footer (O), and one or more sections, each with an optional section title (HEADER) and
key/value rows in one or two columns: a question ("Date:", "Prepared By:") on the left and its answer
("12/03/1998", "Mary Jones") to its right, wrapped or moved to the next line when it does not fit. Words are drawn
exactly where their ground-truth boxes say. The result has the schema of `aetnet.data.funsd.load_funsd`, so every
pipeline written for FUNSD runs on it unchanged, and the labels can be learnt from text and layout together.
"""

from __future__ import annotations

import io
import random

import datasets
from PIL import Image, ImageDraw, ImageFont

from .funsd import funsd_features
from .reader_utils import bio_tags, normalize_bbox, union_bbox


# The vocabulary below is laid out by hand, several entries a line, to keep the module short.
# fmt: off
_TITLES = [
    "PURCHASE ORDER", "EMPLOYEE INFORMATION FORM", "EXPENSE REPORT", "INVOICE", "CONTRACT AGREEMENT",
    "REQUEST FOR PROPOSAL", "PATIENT REGISTRATION", "SHIPPING NOTICE", "MEMORANDUM", "FAX TRANSMITTAL",
    "RESEARCH PROPOSAL", "PROJECT STATUS REPORT", "CHANGE REQUEST", "TRAVEL AUTHORIZATION", "CLAIM FORM",
    "APPLICATION FOR EMPLOYMENT", "VENDOR REGISTRATION", "QUALITY CONTROL REPORT", "TEST MARKET SUMMARY",
    "BUDGET APPROVAL", "MARKETING PLAN", "PRODUCT SPECIFICATION", "LABORATORY REPORT", "MEETING MINUTES",
    "PAYMENT VOUCHER", "ADVERTISING INSERTION ORDER", "SAMPLE REQUEST", "CONFIDENTIAL FAX COVER SHEET",
]
_SECTION_TITLES = [
    "GENERAL INFORMATION", "CONTACT DETAILS", "BILLING", "SHIPPING", "APPROVALS", "PROJECT DETAILS",
    "PAYMENT TERMS", "DISTRIBUTION", "BUDGET SUMMARY", "PRODUCT INFORMATION", "EMPLOYMENT HISTORY",
    "Part A", "Part B", "Section 2", "Vendor Information", "Order Details", "Test Results",
]
_FIRST_NAMES = [
    "John", "Mary", "Robert", "Linda", "James", "Patricia", "Michael", "Barbara", "William", "Susan", "David",
    "Karen", "Richard", "Nancy", "Thomas", "Lisa", "Charles", "Betty", "Daniel", "Helen", "Paul", "Sandra", "Mark",
    "Donna", "George", "Carol", "Kenneth", "Ruth", "Steven", "Sharon", "Edward", "Laura", "Brian", "Anne", "Ronald",
]
_LAST_NAMES = [
    "Smith", "Johnson", "Williams", "Jones", "Brown", "Davis", "Miller", "Wilson", "Moore", "Taylor", "Anderson",
    "Thomas", "Jackson", "White", "Harris", "Martin", "Thompson", "Garcia", "Martinez", "Robinson", "Clark", "Lewis",
    "Walker", "Hall", "Allen", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Carter",
]
_COMPANIES = [
    "Lorillard Tobacco Company", "Acme Research Inc.", "National Analysts", "Burson Marsteller", "Philip Morris USA",
    "R. J. Reynolds", "Covington & Burling", "Leo Burnett Co.", "Brown & Williamson", "Arthur D. Little",
    "Liggett Group", "Shook, Hardy & Bacon", "American Health Foundation", "Tobacco Institute", "Hill & Knowlton",
    "Grey Advertising", "Westat Inc.", "Bates Worldwide", "Harris & Associates", "Maxwell Consumer Reports",
]
_STREETS = ["Main", "Park", "Oak", "Maple", "Madison", "Lexington", "Broad", "Market", "Church", "Elm", "Pine"]
_STREET_KINDS = ["Street", "Avenue", "Road", "Boulevard", "Drive", "Plaza"]
_CITIES = [
    ("New York", "NY"), ("Greensboro", "NC"), ("Richmond", "VA"), ("Louisville", "KY"), ("Chicago", "IL"),
    ("Winston-Salem", "NC"), ("Washington", "DC"), ("Atlanta", "GA"), ("Boston", "MA"), ("Philadelphia", "PA"),
]
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
]
_DEPARTMENTS = [
    "Research & Development", "Marketing", "Legal", "Accounting", "Public Relations", "Sales", "Purchasing",
    "Quality Assurance", "Brand Management", "Human Resources", "Manufacturing", "Scientific Affairs",
]
_PRODUCTS = [
    "Kent Golden Lights", "Newport 100s", "True Menthol", "Old Gold Filters", "Max Box", "Satin Lights",
    "carton display units", "point of sale posters", "filter samples", "printed brochures", "coupon inserts",
]
_PHRASES = [
    "Quarterly market review", "Samples to be shipped by air", "Revised budget attached", "See attached memo",
    "Follow up with regional managers", "Results of consumer panel", "Analysis of test market data",
    "Please confirm receipt", "Meeting moved to Tuesday", "New packaging design", "Renewal of annual contract",
    "Approved as submitted", "Pending legal review", "Deliver to loading dock", "Study of filter efficiency",
]
_UNITS = ["cartons", "cases", "pages", "units", "boxes", "samples", "packs"]
_LETTERHEAD_SUFFIXES = ["Inc.", "Corporation", "Research Center", "Laboratories", "Company", "Division"]
_INSTRUCTIONS = [
    "Please type or print clearly", "Attach all receipts", "All fields are required",
    "Return this form to the Research Department", "Complete both sides of this form", "Use black ink only",
    "Retain a copy for your records", "Incomplete forms will be returned",
]
_FOOTERS = [
    "Page 1 of 1", "Page 1 of 2", "For office use only", "CONFIDENTIAL", "Thank you for your cooperation",
    "Form No. 1042 Rev. 5/97", "Printed in U.S.A.", "Distribution: White - Original Yellow - File",
]
# The questions that ask for each kind of answer (see `_ANSWERS`); a colon is appended when a form is drawn.
_QUESTIONS_BY_KIND = {
    "date": ["Date", "Date Submitted", "Due Date", "Start Date", "Ship Date", "Date of Birth", "Report Date"],
    "person": ["Name", "To", "From", "Prepared By", "Approved By", "Contact Person", "Supervisor", "Attention",
               "Requested By", "Project Leader", "cc"],
    "phone": ["Phone", "Telephone", "Fax", "Fax Number", "Phone No."],
    "company": ["Company", "Vendor", "Client", "Supplier", "Organization", "Bill To"],
    "address": ["Address", "Street Address", "Ship To"],
    "city": ["City, State, Zip", "Location"],
    "amount": ["Total Amount", "Budget", "Unit Price", "Total Cost", "Amount Due", "Subtotal"],
    "number": ["Account No.", "Invoice No.", "P.O. Number", "Project No.", "Reference", "File No.", "Employee ID"],
    "percent": ["Discount", "Tax Rate", "Share of Market"],
    "quantity": ["Quantity", "No. of Pages", "Sample Size"],
    "department": ["Department", "Division"],
    "yesno": ["Approved", "Rush Order", "Samples Enclosed"],
    "product": ["Product", "Brand", "Item Description"],
    "phrase": ["Subject", "Purpose", "Comments", "Description", "Remarks", "Objective"],
    "time": ["Time", "Meeting Time"],
}
# fmt: on


def _person(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    return rng.choice([f"{first} {last}", f"{first[0]}. {last}", f"Dr. {first} {last}", f"{last}, {first}"])


def _date(rng: random.Random) -> str:
    year, month, day = rng.randint(1985, 2001), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{month:02d}/{day:02d}/{year}",
            f"{_MONTHS[month - 1]} {day}, {year}",
            f"{day}-{_MONTHS[month - 1][:3]}-{year % 100:02d}",
        ]
    )


def _amount(rng: random.Random) -> str:
    return f"${rng.randint(1, 250000):,}.{rng.randint(0, 99):02d}"


# Answer generators by kind of answer.
_ANSWERS = {
    "date": _date,
    "person": _person,
    "phone": lambda rng: rng.choice(["({a}) {b}-{c}", "{a}-{b}-{c}"]).format(
        a=rng.randint(201, 989), b=rng.randint(200, 999), c=f"{rng.randint(0, 9999):04d}"
    ),
    "company": lambda rng: rng.choice(_COMPANIES),
    "address": lambda rng: f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}",
    "city": lambda rng: "{}, {} {:05d}".format(*rng.choice(_CITIES), rng.randint(10000, 99999)),
    "amount": _amount,
    "number": lambda rng: rng.choice(["{n}", "A-{n}", "No. {n}", "{n}-{m}"]).format(
        n=rng.randint(100, 99999), m=rng.randint(1, 99)
    ),
    "percent": lambda rng: f"{rng.randint(1, 60)}.{rng.randint(0, 9)}%",
    "quantity": lambda rng: f"{rng.randint(1, 5000):,} {rng.choice(_UNITS)}",
    "department": lambda rng: rng.choice(_DEPARTMENTS),
    "yesno": lambda rng: rng.choice(["Yes", "No", "N/A", "X"]),
    "product": lambda rng: rng.choice(_PRODUCTS),
    "phrase": lambda rng: ". ".join(rng.sample(_PHRASES, k=rng.choice([1, 1, 2]))),
    "time": lambda rng: f"{rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45'])} {rng.choice(['AM', 'PM'])}",
}
_QUESTIONS = [(question, kind) for kind, questions in _QUESTIONS_BY_KIND.items() for question in questions]


class _FormCanvas:
    """A page being filled: places words, draws them and records their entities (type, words, pixel boxes)."""

    def __init__(self, rng: random.Random, image_size: tuple[int, int], fonts: dict):
        self.width, self.height, self.fonts = image_size[0], image_size[1], fonts
        self.image = Image.new("L", image_size, 255)
        self.draw = ImageDraw.Draw(self.image)
        self.ink = rng.randint(0, 70)
        self.entities: list[tuple[str | None, list[str], list[list[int]]]] = []

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        if size not in self.fonts:
            self.fonts[size] = ImageFont.load_default(size=size)
        return self.fonts[size]

    def layout(self, text: str, size: int, x: int, y: int, x_max: int) -> list[tuple[str, int, int, list[int]]]:
        """Positions and pixel boxes of the words of `text`, wrapped at `x_max` back to `x`."""
        font = self.font(size)
        space, line_height = font.getlength(" "), round(size * 1.35)
        placed, cursor_x = [], x
        for word in text.split():
            left, top, right, bottom = font.getbbox(word)
            if placed and cursor_x + right > x_max:
                cursor_x, y = x, y + line_height
            placed.append(
                (word, round(cursor_x), y, [round(cursor_x) + left, y + top, round(cursor_x) + right, y + bottom])
            )
            cursor_x += font.getlength(word) + space
        return placed

    def fits(self, placed) -> bool:
        return all(box[2] <= self.width and box[3] <= self.height - 20 for *_, box in placed)

    def add(self, entity_type: str | None, placed, size: int) -> int:
        """Draw `placed` words as one entity; return the y just below it."""
        font = self.font(size)
        for word, x, y, _ in placed:
            self.draw.text((x, y), word, fill=self.ink, font=font)
        self.entities.append((entity_type, [p[0] for p in placed], [p[3] for p in placed]))
        return max(p[3][3] for p in placed)

    def underline(self, x0: int, x1: int, y: int) -> None:
        self.draw.line([(x0, y), (x1, y)], fill=self.ink, width=1)


def _render_form(rng: random.Random, image_size: tuple[int, int], fonts: dict) -> _FormCanvas:
    """One form: the heading, a footer reserved at the bottom, then up to four sections of questions and answers.
    A seed's forms must stay byte-identical (the embedded default data set, and what was measured on it, depend on
    them): this function and the ones it calls keep their exact sequence of `rng` calls."""
    canvas = _FormCanvas(rng, image_size, fonts)
    width, height = image_size
    margin = rng.randint(30, 70)
    body = rng.randint(12, 17)
    y = _render_heading(canvas, rng, margin, body, y=rng.randint(25, 60))
    footer = None
    if rng.random() < 0.5:
        footer = canvas.layout(rng.choice(_FOOTERS), body - 1, margin, height - margin, width - margin)
    bottom = (footer[0][3][1] - 10) if footer else height - 20
    questions = rng.sample(_QUESTIONS, k=rng.randint(12, 30))
    for section in range(rng.randint(1, 4)):
        if not questions or y > bottom - 3 * body:
            break
        y = _render_section(canvas, rng, section, questions, margin, body, y, bottom)
    if footer:
        canvas.add(None, footer, body - 1)
    return canvas


def _centered_or_left(canvas: _FormCanvas, rng: random.Random, text: str, size: int, margin: int) -> int:
    """The x of a heading line: centred half of the time when it fits between the margins, else at the left margin."""
    width, text_width = canvas.width, canvas.font(size).getlength(text)
    return round((width - text_width) / 2) if rng.random() < 0.5 and text_width < width - 2 * margin else margin


def _render_heading(canvas: _FormCanvas, rng: random.Random, margin: int, body: int, y: int) -> int:
    """A letterhead (sometimes), the title (HEADER; sometimes underlined), an instruction (sometimes); the y below."""
    width = canvas.width
    if rng.random() < 0.5:
        letterhead = f"{rng.choice(_LAST_NAMES)} {rng.choice(_LETTERHEAD_SUFFIXES)}"
        x = _centered_or_left(canvas, rng, letterhead, body, margin)
        placed = canvas.layout(letterhead, body, x, y, width - margin)
        y = canvas.add(None, placed, body) + 12
    title, title_size = rng.choice(_TITLES), body + rng.randint(6, 12)
    x = _centered_or_left(canvas, rng, title, title_size, margin)
    placed = canvas.layout(title, title_size, x, y, width - margin)
    y = canvas.add("HEADER", placed, title_size)
    if rng.random() < 0.5:
        canvas.underline(margin, width - margin, y + 6)
    y += rng.randint(16, 30)
    if rng.random() < 0.4:
        y = canvas.add(None, canvas.layout(rng.choice(_INSTRUCTIONS), body, margin, y, width - margin), body) + 14
    return y


def _render_section(
    canvas: _FormCanvas, rng: random.Random, section: int, questions: list, margin: int, body: int, y: int, bottom: int
) -> int:
    """A section title (HEADER; optional for the first section), the next questions of `questions` (taken off it) as
    rows in one or two columns until one does not fit above `bottom`, and sometimes a note; returns the y below."""
    width = canvas.width
    if section > 0 or rng.random() < 0.3:
        section_size = body + rng.randint(1, 4)
        placed = canvas.layout(rng.choice(_SECTION_TITLES), section_size, margin, y, width - margin)
        y = canvas.add("HEADER", placed, section_size) + rng.randint(8, 16)
    columns = 2 if rng.random() < 0.4 else 1
    column_width = (width - 2 * margin - 30 * (columns - 1)) // columns
    row_gap = rng.randint(8, 22)
    aligned = rng.random() < 0.5
    column_tops = [y] * columns
    rows = questions[: rng.randint(4, 12)]
    del questions[: len(rows)]
    for row, entry in enumerate(rows):
        column = row % columns
        cell = (margin + column * (column_width + 30), column_tops[column], column_width)
        row_bottom = _render_row(canvas, rng, entry, cell, aligned, body, bottom)
        if row_bottom is None:
            break
        column_tops[column] = row_bottom + row_gap
    y = max(column_tops) + rng.randint(10, 25)
    if rng.random() < 0.25:
        note = canvas.layout(rng.choice(_INSTRUCTIONS), body, margin, y, width - margin)
        if max(box[3] for *_, box in note) < bottom:
            y = canvas.add(None, note, body) + rng.randint(12, 25)
    return y


def _render_row(
    canvas: _FormCanvas, rng: random.Random, entry: tuple, cell: tuple, aligned: bool, body: int, bottom: int
) -> int | None:
    """The question (QUESTION) of `entry` (question, kind of answer) and its answer (ANSWER; sometimes left blank, and
    then underlined, as some filled ones are) in `cell` (x, y, width); returns the row's bottom, or `None`, with
    nothing drawn, when the row does not fit."""
    (question, kind), (x, row_y, column_width) = entry, cell
    x_max = x + column_width
    question_text = question if rng.random() < 0.1 else f"{question}:"
    question_placed = canvas.layout(question_text, body, x, row_y, x + column_width // 2)
    question_right = max(box[2] for *_, box in question_placed)
    answer_x = (
        x + column_width // 3
        if aligned and question_right < x + column_width // 3 - 10
        else question_right + rng.randint(8, 20)
    )
    if x_max - answer_x < 80:
        answer_x, answer_y = x + 20, max(box[3] for *_, box in question_placed) + 6
    else:
        answer_y = row_y
    answer_placed = [] if rng.random() < 0.08 else canvas.layout(_ANSWERS[kind](rng), body, answer_x, answer_y, x_max)
    row_bottom = max(box[3] for *_, box in question_placed + answer_placed)
    if row_bottom > bottom or not canvas.fits(question_placed + answer_placed):
        return None
    canvas.add("QUESTION", question_placed, body)
    if answer_placed:
        canvas.add("ANSWER", answer_placed, body)
    if not answer_placed or rng.random() < 0.3:
        line_y = max(box[3] for *_, box in answer_placed) + 2 if answer_placed else answer_y + body
        canvas.underline(answer_x, x_max, line_y)
    return row_bottom


def generate_synthetic_forms(
    num_documents: int,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (762, 1000),
    word_level: bool = False,
    id_prefix: str = "synthetic",
) -> datasets.Dataset:
    """Render `num_documents` synthetic forms into a `datasets.Dataset` with the schema of `load_funsd`.

    Args:
        num_documents (`int`): how many forms to render.
        seed (`int`, *optional*, defaults to 0):
            Seeds everything (layout, text, ink); the same seed gives the same words, boxes, labels and PNG bytes,
            and the first `k` forms do not depend on `num_documents`.
        image_size (`tuple[int, int]`, *optional*, defaults to `(762, 1000)`):
            Page `(width, height)` in pixels; the default is the typical FUNSD page. At least 500 x 500.
        word_level (`bool`, *optional*, defaults to `False`):
            By default each word gets the box of its entity (segment-level, like `load_funsd`); `True` keeps the
            box of every word.
        id_prefix (`str`, *optional*, defaults to `"synthetic"`): example ids are `f"{id_prefix}_{index:05d}"`.

    Returns:
        `datasets.Dataset` with `id`, `words`, `bboxes` (0-1000, normalised by the page size), `ner_tags`
        (`ClassLabel` over `FUNSD_LABELS`) and `image` (8-bit gray PNG, decoded as RGB).
    """
    if not isinstance(num_documents, int) or num_documents < 1:
        raise ValueError(f"`num_documents` must be a positive integer, got {num_documents!r}.")
    if len(image_size) != 2 or min(image_size) < 500:
        raise ValueError(f"`image_size` must be (width, height) with both at least 500 pixels, got {image_size!r}.")
    width, height = (int(side) for side in image_size)
    rng, fonts = random.Random(seed), {}
    columns = {name: [] for name in funsd_features()}
    for index in range(num_documents):
        canvas = _render_form(rng, (width, height), fonts)
        words, bboxes, tags = [], [], []
        for entity_type, entity_words, entity_boxes in canvas.entities:
            boxes = [normalize_bbox(box, width, height) for box in entity_boxes]
            if not word_level:
                boxes = [union_bbox(boxes)] * len(boxes)
            words.extend(entity_words)
            bboxes.extend(boxes)
            tags.extend(bio_tags(entity_type, len(entity_words)))
        buffer = io.BytesIO()
        canvas.image.save(buffer, format="PNG")
        columns["id"].append(f"{id_prefix}_{index:05d}")
        columns["words"].append(words)
        columns["bboxes"].append(bboxes)
        columns["ner_tags"].append(tags)
        columns["image"].append({"bytes": buffer.getvalue(), "path": None})
    return datasets.Dataset.from_dict(columns, features=funsd_features())


def load_synthetic_funsd(
    num_train: int = 64,
    num_test: int = 16,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (762, 1000),
    word_level: bool = False,
) -> datasets.DatasetDict:
    """A FUNSD-shaped `DatasetDict` of synthetic forms, `train` rendered with `seed` and `test` with
    `seed + 1_000_003` so that the two splits hold different forms. Arguments are those of `generate_synthetic_forms`.
    """
    forms = {"image_size": image_size, "word_level": word_level}
    train = generate_synthetic_forms(num_train, seed=seed, id_prefix="train", **forms)
    test = generate_synthetic_forms(num_test, seed=seed + 1_000_003, id_prefix="test", **forms)
    return datasets.DatasetDict({"train": train, "test": test})


__all__ = ["generate_synthetic_forms", "load_synthetic_funsd"]

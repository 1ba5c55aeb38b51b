"""segments.load() gives exactly what the one-by-one reference gives, odd files and large."""

from __future__ import annotations

import json
import sys

import pandas.testing as pdt
import pytest
from conftest import EDGE_CASE_CSV, TOKEN

from campaign_pipeline import sample_data, segments
from campaign_pipeline.segments import contacts, reading, rows
from campaign_pipeline.testing.reference import load_one_by_one

SEGMENTS = ["premium", "regular", "new"]

# Everything the csv module copes with: quoted commas, a quoted newline, a blank line, a BOM,
# records with too many and too few fields. pyarrow cannot read this one the same way.
QUOTED_FILE = EDGE_CASE_CSV + (
    f'A7,"Quoted, Name",new,a7@example.com,+12125550107,{TOKEN},"two\nlines"\n'
    f"A8,After,new,a8@example.com,+12125550108,{TOKEN},row 13\n"
    ",,,,, ,\n"
    "A9,Short,new,a9@example.com\n"
    f"A1,Again,vip,z@example.com,,,x\n"
    f'A10,"Say ""hi""",new,a10@example.com,+12125550110,{TOKEN},"a,b"\n'
)

# The same kinds of values without quotes, blank lines or malformed records, so that pyarrow
# reads it; with an unnamed column, and whitespace str.strip() knows of.
PLAIN_FILE = (
    "\ufeffcustomer_id,first_name,Segment,EMAIL,phone,device_token,Notes,,remarks\n"
    f"B1,Ann,premium,ann@example.com,+12125550100,{TOKEN},first,unnamed,second\n"
    f"B1,Dup,new,dup@example.com,+12125550101,{TOKEN},x,,y\n"
    f"B2,Ann,vip,ann@example.com,+12125550100,{TOKEN},x,,y\n"
    f",Ann,new,ann@example.com,+12125550100,{TOKEN},x,,y\n"
    f"B3,Tab,\tNEW\x1c,\xa0Jürgen@Bücher.example\u3000,+44 20 7946 0958,{TOKEN}é,\x1fz ,,y\n"
    f"B4,Short,Premium,Postmaster@EXAMPLE.com,+1 (212) 555-0199,{'a' * 31},x,,y\n"
    f"B5,Edge,regular,b5@exa mple.com,+15005550001,{'a' * 32},x,,y\n"
    f"B6,Edge,regular,b6@exa mple.com,+1500555000,{'a' * 32}\u2003,x,,y\n"
    "B7,Empty,new,,,,x,,y\n"
    " , , , , , , , , \n"
    f"B8,Long,new,b8@{'d' * 300}.com,12,{'b' * 4097},x,,y\n"
    f"B9,Dots,new,a..b@example.com,+1-212-555-0100 ext. 7,{'c' * 4096},x,,y\n"
    f"B2,Late,regular,late@example.com,+12125550100,{TOKEN},x,,y\n"
)


def assert_same(path, region: str = "US", vanity: bool = False) -> segments.Segments:
    fast = segments.load(str(path), SEGMENTS, region, vanity)
    slow = load_one_by_one(str(path), SEGMENTS, region, vanity)
    assert list(fast.customers.columns) == fast.columns == slow.columns
    pdt.assert_frame_equal(fast.customers, slow.customers)
    pdt.assert_frame_equal(fast.rejected, slow.rejected)
    assert fast.records_read == slow.records_read
    assert json.dumps(fast.summary()) == json.dumps(slow.summary())  # key order too
    return fast


@pytest.fixture(params=["inline", "pool"])
def parallel(request, monkeypatch) -> str:
    """Check the values in this process, or (threshold 0) in the worker processes."""
    if request.param == "pool":
        monkeypatch.setattr(contacts, "PARALLEL_MIN_VALUES", 0)
    return request.param


@pytest.mark.usefixtures("parallel")
def test_quoted_file_matches_the_reference(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(QUOTED_FILE, encoding="utf-8")
    assert reading.read_with_pyarrow(str(path)) is None, "needs the csv module"

    loaded = assert_same(path)

    rejected = loaded.rejected[["row", "reason"]].values.tolist()
    assert rejected == [
        [3, "duplicate_customer_id"],
        [4, "missing_customer_id"],
        [5, "unknown_segment"],
        [8, "malformed_row"],
        [14, "malformed_row"],  # a spreadsheet shows A7's two-line field as one row
        [15, "unknown_segment"],
    ]
    assert loaded.customers["row"].tolist() == ["2", "6", "7", "10", "11", "12", "16"]
    assert (
        loaded.rejected["raw"][3]
        == "A5,Extra,new,a5@example.com,+12125550105," + TOKEN + "6,x,surplus"
    )
    a7 = loaded.customers.set_index("customer_id").loc["A7"]
    assert (a7["first_name"], a7["notes"]) == ("Quoted, Name", "two\nlines")
    assert loaded.records_read == 13


@pytest.mark.usefixtures("parallel")
def test_plain_file_takes_pyarrow_and_matches_the_reference(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(PLAIN_FILE, encoding="utf-8")
    assert reading.read_with_pyarrow(str(path)) is not None

    loaded = assert_same(path)

    assert loaded.columns[-2:] == ["notes", "remarks"] and "" not in loaded.columns
    b3 = loaded.customers.set_index("customer_id").loc["B3"]
    assert (b3["segment"], b3["email"], b3["notes"]) == ("new", "Jürgen@bücher.example", "z")
    assert loaded.summary()["rejected_by_reason"] == {
        "duplicate_customer_id": 1,
        "unknown_segment": 1,
        "missing_customer_id": 1,
    }


HEADER = "customer_id,first_name,segment,email,phone,device_token\n"


def row(cid: str, name: str = "Ann", phone: str = "+12125550100") -> str:
    return f"{cid},{name},new,{cid.lower()}@example.com,{phone},{TOKEN}\n"


# Customer files as they really come: each problem on its own row, good rows between them.
MESSY_FILE = (
    HEADER
    + row("M1")
    + row("M2", phone="2125550lOO")  # letters l and O typed for 1 and 0
    + row("M3", phone="212-555-O1OO")
    + row("M4", phone="+1 212 555 0109 ext. 12")
    + row("M5", phone="1-800-FLOWERS")
    + row("M6", name="x" * 1_000_000)  # a 1 MB field
    + row("M7", name="Nul\x00Byte")
    + row("M8", name="Bell\x07")
    + row("M9", name='"Two\nlines"')  # a quoted field over two lines is one row
    + row("M10", name='"Unclosed')  # would swallow the rows below up to the next quote
    + row("M11")
    + row("M12", name='"Closed"')
    + row("M13")
    + row("M14", name="y" * 5_000_000)  # a 5 MB line
    + row("M15", name="\x1cSpaced\x1f")  # control characters that are whitespace at an edge
    + row("M16", name="%campaign_html%")
)


@pytest.mark.usefixtures("parallel")
def test_messy_file_rejects_only_the_bad_rows(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(MESSY_FILE, encoding="utf-8")

    loaded = assert_same(path)

    rejected = loaded.rejected.set_index("row")
    assert rejected["reason"].to_dict() == {
        7: "field_too_large",
        8: "control_character",
        9: "control_character",
        11: "unbalanced_quote",
        15: "field_too_large",
    }
    assert rejected.loc[7, "detail"] == (
        "field first_name has 1,000,000 characters; at most 131,072 are read"
    )
    assert len(rejected.loc[15, "raw"]) < 2_100
    assert rejected.loc[8, "detail"] == (
        "field first_name contains control character U+0000 at position 4"
    )
    assert rejected.loc[11, "detail"].startswith(
        f"customer file {path}, line 12, field first_name: a quote opens and does not close "
        "on its line"
    )
    customers = loaded.customers.set_index("customer_id")
    assert customers["row"].to_dict() == {
        "M1": "2", "M2": "3", "M3": "4", "M4": "5", "M5": "6", "M9": "10", "M11": "12",
        "M12": "13", "M13": "14", "M15": "16", "M16": "17",
    }  # fmt: skip
    assert customers.loc["M9", "first_name"] == "Two\nlines"
    assert customers.loc["M15", "first_name"] == "Spaced"
    errors = customers["phone_error"]
    assert errors["M2"] == (
        "invalid: phone '2125550lOO' contains letters; fix the number, or set [campaign] "
        "accept_vanity_numbers = true for numbers such as 1-800-FLOWERS"
    )
    assert errors["M3"].startswith("invalid: phone '212-555-O1OO' contains letters")
    assert errors["M4"] == (
        "invalid: phone '+1 212 555 0109 ext. 12' has an extension (12); a text message "
        "cannot reach an extension"
    )
    assert errors["M5"].startswith("invalid: phone '1-800-FLOWERS' contains letters")
    assert (errors["M1"], customers.loc["M1", "phone"]) == ("", "+12125550100")
    assert loaded.records_read == 16


@pytest.mark.usefixtures("parallel")
def test_vanity_numbers_are_texted_when_accepted(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(MESSY_FILE, encoding="utf-8")

    customers = assert_same(path, vanity=True).customers.set_index("customer_id")

    assert customers.loc["M5", ["phone", "phone_error"]].tolist() == ["+18003569377", ""]
    assert customers.loc["M4", "phone_error"].endswith("a text message cannot reach an extension")


@pytest.mark.usefixtures("parallel")
def test_row_numbers_follow_the_spreadsheet_after_a_multiline_field(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(
        HEADER + row("R1", name='"Line\nbreak\nthree"') + "\n" + row("R2") + row("R2"),
        encoding="utf-8",
    )

    loaded = assert_same(path)

    assert loaded.customers["row"].tolist() == ["2", "4"]  # the blank line is row 3
    assert loaded.rejected[["row", "detail"]].values.tolist() == [
        [5, "customer_id already seen on row 4"]
    ]


@pytest.mark.usefixtures("parallel")
def test_a_control_character_in_any_column_rejects_the_row(tmp_path):
    path = tmp_path / "customers.csv"
    header = HEADER.replace("\n", ",,\n")  # two unnamed columns, as spreadsheets export
    text = row("K1").replace("\n", ",a,\x01b\n") + row("K2").replace("\n", ",,\n")
    path.write_text(header + text, "utf-8")

    loaded = assert_same(path)

    assert loaded.rejected[["row", "detail"]].values.tolist() == [
        [2, "field unnamed contains control character U+0001 at position 1"]
    ]


@pytest.mark.usefixtures("parallel")
def test_an_unbalanced_quote_costs_its_own_row_only(tmp_path):
    path = tmp_path / "customers.csv"
    text = row("U1", name='"Unclosed') + row("U2", name='"Closed"') + row("U3")
    text += row("U4", phone='"+12125550104') + "\n" + row("U5")  # open to the end of the file
    path.write_text(HEADER + text, encoding="utf-8")

    loaded = assert_same(path)

    assert loaded.rejected[["row", "reason", "detail"]].values.tolist() == [
        [2, "unbalanced_quote", unclosed(path, 2, "first_name")],
        [5, "unbalanced_quote", unclosed(path, 5, "phone")],
    ]
    customers = loaded.customers.set_index("customer_id")
    assert customers["row"].to_dict() == {"U2": "3", "U3": "4", "U5": "7"}
    assert customers.loc["U2", "first_name"] == "Closed"


def unclosed(path, line: int, field: str) -> str:
    return (
        f"customer file {path}, line {line}, field {field}: a quote opens and does not close "
        "on its line; this row is left out and the lines after it are read as rows of their "
        "own (close or remove the quote)"
    )


@pytest.mark.parametrize("load", [segments.load, load_one_by_one])
def test_header_mistakes_are_fatal(tmp_path, load):
    path = tmp_path / "customers.csv"
    path.write_text(HEADER.replace("first_name", " Email ") + row("H1"), encoding="utf-8")
    with pytest.raises(
        segments.InputError, match=r"columns ' Email ' and 'email' are the same name but"
    ):
        load(str(path), SEGMENTS, "US")
    # The header misses first_name: every row has one field more.
    short = HEADER.replace("first_name,", "")
    path.write_text(short + row("H1") + row("H2") + row("H3"), encoding="utf-8")
    with pytest.raises(segments.InputError) as caught:
        load(str(path), SEGMENTS, "US")
    assert str(caught.value) == (
        f"customer file {path}: the header has 5 columns (customer_id, segment, email, phone, "
        "device_token) but 3 of 3 rows have more fields; add the missing column name(s) to "
        "the header row"
    )
    # One row with a field too many is that row's problem.
    path.write_text(short + row("H1") + row("H2").replace("Ann,", ""), encoding="utf-8")
    assert load(str(path), SEGMENTS, "US").rejected["row"].tolist() == [2]


@pytest.mark.parametrize("load", [segments.load, load_one_by_one])
def test_a_bad_byte_is_counted_from_the_start_of_the_file(tmp_path, load):
    path = tmp_path / "customers.csv"
    body = HEADER.encode() + row("B1").encode() * 400  # beyond the text reader's first chunk
    path.write_bytes(b"\xef\xbb\xbf" + body + b"B2,Zo\xeb\n")
    with pytest.raises(segments.InputError, match=rf"\(byte {3 + len(body) + 5} of the file"):
        load(str(path), SEGMENTS, "US")


@pytest.mark.parametrize("load", [segments.load, load_one_by_one])
def test_file_errors_are_the_same(tmp_path, load):
    path = tmp_path / "customers.csv"
    with pytest.raises(segments.InputError, match="no such file"):
        load(str(path), SEGMENTS, "US")
    path.write_bytes(b"")
    with pytest.raises(segments.InputError, match="the file is empty"):
        load(str(path), SEGMENTS, "US")
    path.write_bytes("customer_id,segment,email,phone,device_token\nC1,Zoë,,,\n".encode("latin-1"))
    with pytest.raises(segments.InputError, match=r"not valid UTF-8 \(byte 50 of the file"):
        load(str(path), SEGMENTS, "US")
    path.write_text("Customer_ID,segment,email\nC1,new,a@example.com\n")
    with pytest.raises(segments.InputError, match=r"column\(s\) phone, device_token \(found: cus"):
        load(str(path), SEGMENTS, "US")


def test_whitespace_is_what_str_strip_removes():
    spaces = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert spaces == rows._WHITESPACE


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "customers.csv"
    sample_data.write_large(str(path), 30_000, seed=11, dirty=0.05)
    return path


def test_large_file_through_the_pool_matches_the_reference(tmp_path, monkeypatch):
    # 8,000 rows in chunks of 3,000 values: several chunks a field for each worker, put back
    # in order; the row-by-row reference is the slow half, so the file is no bigger than that
    large_file = tmp_path / "customers.csv"
    sample_data.write_large(str(large_file), 8_000, seed=11, dirty=0.05)
    monkeypatch.setattr(contacts, "PARALLEL_MIN_VALUES", 1_000)
    monkeypatch.setattr(contacts, "CHUNK", 3_000)
    pooled = []
    check_in_pool = contacts._check_in_pool
    monkeypatch.setattr(
        contacts, "_check_in_pool", lambda *a: pooled.append(1) or check_in_pool(*a)
    )

    loaded = assert_same(large_file)

    assert pooled, "the values were not checked in the worker processes"
    assert loaded.records_read == 8_000


def test_write_large_is_deterministic(tmp_path):
    paths = [tmp_path / f"{name}.csv" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        sample_data.write_large(str(path), 2_000, seed=seed)
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    assert paths[0].read_text().splitlines()[0] == ",".join(sample_data.COLUMNS)


def test_write_large_spoils_the_requested_fraction(large_file):
    """Each of the twelve problems is given to about 5 % / 12 of the 30,000 rows."""
    loaded = segments.load(str(large_file), SEGMENTS, "US")
    customers = loaded.customers
    summary = loaded.summary()
    issues = summary["contact_issues"]
    found = {
        **summary["rejected_by_reason"],
        **{f"{channel} {reason}": n for channel in issues for reason, n in issues[channel].items()},
        "uppercase email": int(customers["email"].str.contains("[A-Z]", regex=True).sum()),
        "bounce email": int(customers["email"].str.startswith("bounce.").sum()),
        "magic number": int(customers["phone"].str.startswith("+1500555000").sum()),
        "unregistered token": int(customers["device_token"].str.startswith("unregistered").sum()),
    }
    expected = round(0.05 * 29_999) / 12
    assert len(found) == 12, found  # all but the numbers written without +1, which are valid
    assert all(abs(n - expected) <= 0.1 * expected for n in found.values()), found
    assert len(customers["customer_id"].unique()) == len(customers)

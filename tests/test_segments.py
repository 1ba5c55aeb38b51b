"""segments.load() gives exactly what the one-by-one reference gives, odd files and large."""

from __future__ import annotations

import json
import sys

import pandas.testing as pdt
import pytest
from conftest import EDGE_CASE_CSV, TOKEN

from campaign_pipeline import sample_data, segments

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
# reads it; with a repeated and an unnamed column, and whitespace str.strip() knows of.
PLAIN_FILE = (
    "\ufeffcustomer_id,first_name,Segment,EMAIL,phone,device_token,Notes,,notes\n"
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


def assert_same(path, region: str = "US") -> segments.Segments:
    fast = segments.load(str(path), SEGMENTS, region)
    slow = segments.load_one_by_one(str(path), SEGMENTS, region)
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
        monkeypatch.setattr(segments, "PARALLEL_MIN_VALUES", 0)
    return request.param


def test_quoted_file_matches_the_reference(tmp_path, parallel):
    path = tmp_path / "customers.csv"
    path.write_text(QUOTED_FILE, encoding="utf-8")
    assert segments._read_with_pyarrow(str(path)) is None, "needs the csv module"

    loaded = assert_same(path)

    rejected = loaded.rejected[["row", "reason"]].values.tolist()
    assert rejected == [
        [3, "duplicate_customer_id"],
        [4, "missing_customer_id"],
        [5, "unknown_segment"],
        [8, "malformed_row"],
        [15, "malformed_row"],
        [16, "unknown_segment"],
    ]
    assert loaded.customers["row"].tolist() == ["2", "6", "7", "10", "11", "13", "17"]
    assert (
        loaded.rejected["raw"][3]
        == "A5,Extra,new,a5@example.com,+12125550105," + TOKEN + ",x,surplus"
    )
    a7 = loaded.customers.set_index("customer_id").loc["A7"]
    assert (a7["first_name"], a7["notes"]) == ("Quoted, Name", "two\nlines")
    assert loaded.records_read == 13


def test_plain_file_takes_pyarrow_and_matches_the_reference(tmp_path, parallel):
    path = tmp_path / "customers.csv"
    path.write_text(PLAIN_FILE, encoding="utf-8")
    assert segments._read_with_pyarrow(str(path)) is not None

    loaded = assert_same(path)

    assert loaded.columns[-1] == "notes" and "" not in loaded.columns
    b3 = loaded.customers.set_index("customer_id").loc["B3"]
    assert (b3["segment"], b3["email"], b3["notes"]) == ("new", "Jürgen@bücher.example", "z")
    assert loaded.summary()["rejected_by_reason"] == {
        "duplicate_customer_id": 1,
        "unknown_segment": 1,
        "missing_customer_id": 1,
    }


@pytest.mark.parametrize("load", [segments.load, segments.load_one_by_one])
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
    assert spaces == segments._WHITESPACE


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "customers.csv"
    sample_data.write_large(str(path), 30_000, seed=11, dirty=0.05)
    return path


def test_large_file_through_the_pool_matches_the_reference(large_file, monkeypatch):
    monkeypatch.setattr(segments, "PARALLEL_MIN_VALUES", 1_000)
    pooled = []
    check_in_pool = segments._check_in_pool
    monkeypatch.setattr(
        segments, "_check_in_pool", lambda *a: pooled.append(1) or check_in_pool(*a)
    )

    loaded = assert_same(large_file)

    assert pooled, "the values were not checked in the worker processes"
    assert loaded.records_read == 30_000


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

"""Dedupe keeps information, drops low-entropy units with a traceable reason, and carries state between batches."""
from __future__ import annotations

import email
import json
from datetime import datetime, timedelta, timezone
from email import policy
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from memtape.transforms.dedupe import state as dedupe_state
from memtape.transforms.dedupe import DROPPED, STATE, Dedupe, Deduper, DedupeState, describe_dropped

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENRON = SHARED / "email" / "skilling-j"
PAIRS = Path(__file__).parent / "fixtures" / "dedupe" / "near_dup_pairs.jsonl"
T0 = datetime(2001, 5, 1, 9, 0, tzinfo=timezone.utc)


def _row(event_id: str, text: str, minutes: int = 0, kind: str = "email", sender: str = "ann@example.com", subject: str = "",
         from_name: str = "") -> dict:
    return {"tenant": "t1", "event_id": event_id, "source_kind": kind, "conversation_id": "c1", "sender": sender,
            "event_time": T0 + timedelta(minutes=minutes), "text": text,
            "attrs": json.dumps({"subject": subject, "from_name": from_name})}


def _enron_row(name: str, minutes: int = 0) -> dict:
    msg = email.message_from_bytes((ENRON / name).read_bytes(), policy=policy.compat32)
    payload = msg.get_payload(decode=True).decode("latin-1")
    return _row(name, payload, minutes, sender=str(msg["From"]), subject=str(msg["Subject"] or ""),
                from_name=str(msg["X-From"] or "").split("<")[0].strip())


def test_exact_duplicate_is_dropped_with_the_event_it_repeats():
    deduper = Deduper()
    deduper.process(_row("a", "The quarterly review moved to Friday at 3pm in room 50M."))
    kept, dropped = deduper.process(_row("b", "the quarterly review  moved to Friday at 3pm in room 50M.", 5))
    assert kept is None
    assert dropped == {"tenant": "t1", "event_id": "b", "conversation_id": "c1", "event_time": T0 + timedelta(minutes=5),
                       "reason": "exact_duplicate", "duplicate_of": "a"}


@pytest.mark.parametrize("text,reason", [("ok", "short_ack"), ("thanks!", "short_ack"), ("lol", "short_ack"),
                                         ("hahahaha", "short_ack"), ("\U0001F602\U0001F44D", "emoji_only"),
                                         ("ha" * 60, "short_ack"), ("see you later! " * 10, "repetitive")])
def test_low_entropy_units_are_dropped_with_their_reason(text, reason):
    kept, dropped = Deduper().process(_row("x", text, kind="im"))
    assert kept is None and dropped["reason"] == reason


def test_short_message_with_content_is_kept():
    kept, dropped = Deduper().process(_row("x", "ok, the demo moved to 3pm Thursday", kind="im"))
    assert dropped is None and kept["text"] == "ok, the demo moved to 3pm Thursday"


def test_chat_system_notices_are_dropped_and_what_people_wrote_is_kept():
    """IRC joins, quits and nick changes land in raw_events, but no memory is made of them."""
    from memtape.connectors.sources.irc import read_irc

    log = Path(__file__).resolve().parents[1] / "samples" / "im" / "irc" / "2005-06-27_12.ascii.txt"
    rows = [record.to_row() for record in read_irc(str(log), "t1") if hasattr(record, "to_row")]
    decided = list(Deduper().process_batch(rows))
    system = {r["event_id"] for r in rows if "subtype\": \"system" in (r["attrs"] or "")}
    dropped = {d["event_id"]: d["reason"] for _, d in decided if d is not None}
    kept = [k for k, _ in decided if k is not None]
    assert system and all(dropped[e] == "system_event" for e in system)
    assert not any("has joined #ubuntu" in k["text"] for k in kept)
    assert any(k["sender"] == "owlmanatt" and "incredibly broke" in k["text"] for k in kept)
    assert describe_dropped([{"reason": "system_event"}] * 2) == "2 system notices"


def test_slack_join_and_integration_notices_are_dropped_and_messages_are_kept():
    """Slack writes "has joined the channel" and "added an integration to this channel" itself; no member wrote them."""
    from memtape.connectors.sources.slack import read_slack

    archive = Path(__file__).resolve().parents[1] / "samples" / "im" / "slack" / "testarchive.zip"
    rows = [record.to_row() for record in read_slack(str(archive), "t1") if hasattr(record, "to_row")]
    decided = list(Deduper().process_batch(rows))
    kept = [k["text"] for k, _ in decided if k is not None]
    dropped = {d["event_id"]: d["reason"] for _, d in decided if d is not None}
    notices = [r["event_id"] for r in rows if "added an integration" in r["text"] or "has joined the channel" in r["text"]]
    assert len(notices) >= 10 and all(dropped[e] == "system_event" for e in notices)
    assert kept and not any("added an integration" in t or "has joined the channel" in t for t in kept)


def test_out_of_office_reply_is_dropped():
    text = "I am currently out of the office until Monday with limited access to email. For urgent matters call Bob."
    _, dropped = Deduper().process(_row("x", text, subject="Out of Office: budget"))
    assert dropped["reason"] == "auto_reply"


def test_dropped_units_are_summarised_by_reason():
    dropped = [{"reason": "short_ack"}, {"reason": "short_ack"}, {"reason": "auto_reply"}, {"reason": "near_duplicate"}]
    assert describe_dropped(dropped) == "2 short acknowledgements, 1 auto-reply, 1 near-duplicate"
    assert describe_dropped([]) is None


def test_signature_learned_from_repeated_tails_is_removed():
    tail = "\n\nDana Whitfield\nSenior Buyer, Plant 4"  # no contact data: first sight does not take it for a signature
    deduper = Deduper()
    first, _ = deduper.process(_row("a", "Please ship the 40 gaskets to dock B before noon." + tail, sender="dana@acme.test"))
    second, _ = deduper.process(_row("b", "The invoice for order 7781 is attached; net 30 terms apply." + tail, 10, sender="dana@acme.test"))
    assert "Dana Whitfield" in first["text"]  # first sight: nothing to learn from yet
    assert second["text"] == "The invoice for order 7781 is attached; net 30 terms apply."
    assert second["stripped"]["signature"] > 0


def test_contact_block_is_removed_on_first_sight():
    body = ("Jeff,\n\nThe Dabhol term sheet is attached; Sherri has the signed copy. Legal wants the board to see it "
            "before the February 12 meeting, so please send comments by Friday. I will be in London on Monday and "
            "Tuesday, and Sherri can reach me there if anything in the draft needs a decision before I get back.")
    text = (body + "\n\nTerrie James\n"
            "Sr. Director, Corporate Communication\nEnron Broadband Services\n713-853-7727 (phone)\n713-646-8887 (fax)\n"
            "terrie_james@enron.net\nwww.enron.net")
    kept, _ = Deduper().process(_row("a", text, sender="terrie.james@enron.com", from_name="Terrie James"))
    assert kept["text"] == body
    assert kept["stripped"]["signature"] > 20


def test_sign_off_glued_to_a_name_goes_with_the_contact_block():
    text = ("Jeff - Congratulations!\n\nWill you be attending the CEO Summit instead of Ken?\n\nBest regards/Alan\n\n"
            "Alan Mitchell\nGeneral Manager, Communication Network Solutions\nMicrosoft\n425-703-5485\n" + "-" * 70 + "\n\n"
            "> HOUSTON -(Dow Jones)- Enron Corp. on Wednesday named Jeffrey K. Skilling chief executive to replace\n"
            "> Kenneth L. Lay, who said he will step down but continue to serve as chairman of the utility and\n"
            "> telecommunications company. Skilling, 47 years old, will take on the new role on Feb. 12.\n")
    kept, _ = Deduper().process(_row("a", text, sender="alanmit@microsoft.com"))
    assert kept["text"] == "Jeff - Congratulations!\n\nWill you be attending the CEO Summit instead of Ken?"
    assert kept["stripped"]["signature"] > 0 and kept["stripped"]["quoted_reply"] > 0


def test_a_card_that_is_most_of_a_short_mail_stays():
    text = "Jeff - Congratulations!\n\nAlan Mitchell\nGeneral Manager\nMicrosoft\n425-703-5485\nalanmit@microsoft.com"
    kept, _ = Deduper().process(_row("a", text, sender="alanmit@microsoft.com"))
    assert kept["text"] == text and "signature" not in kept["stripped"]


@pytest.mark.parametrize("text", [
    "The Dabhol numbers are attached.\n\nCall me at 713-853-6894 after 3pm",
    "The new desk numbers are:\n713-853-6894\n713-853-7727",
    "Who should join the Dabhol review?\n\nTerrie James\nKen Lay\nSherri Sera\nRick Buy",
])
def test_content_at_the_end_is_kept(text):
    kept, _ = Deduper().process(_row("a", text, sender="terrie.james@enron.com", from_name="Terrie James"))
    assert kept["text"] == text
    assert "signature" not in kept["stripped"]


def test_a_phone_number_that_ends_a_wrapped_sentence_stays_and_the_card_below_goes():
    body = ("The spring mixer is on Thursday from six to eight at the Rooftop Grill on Main Street. Members may bring "
            "guests, and the club covers the first round and the appetizers for everyone who signed up.\n\n"
            "To sign up, reply to this mail, write to events@westclub.org or call\n(713) 555-0142.")
    card = "\n\n\n**********\nMara Quist (mara@westclub.org)\nEvents Coordinator, West Club of Houston\nhttp://www.westclub.org/"
    kept, _ = Deduper().process(_row("a", body + card, sender="mara@westclub.org", from_name="Mara Quist"))
    assert kept["text"].endswith("write to events@westclub.org or call (713) 555-0142.")
    assert "Coordinator" not in kept["text"] and kept["stripped"]["signature"] > 0


def test_a_display_name_that_is_an_address_does_not_make_its_domain_the_senders_name():
    """Enron's X-From for mail without a display name is "addr@ENRON": "enron" must not name the sender of every link."""
    from memtape.transforms.dedupe.rules import sender_names

    body = ("Dana, Lee and Sam will each report to the Office of the Chairman from Monday. The new chart shows every "
            "team and its lead, and it is linked below for anyone who wants to print it.")
    text = body + "\n\nhttp://home.enron.com:84/messaging/orgchart.ppt"
    kept, _ = Deduper().process(_row("a", text, sender="no.address@enron.com", from_name="Office of the Chairman@ENRON"))
    assert kept["text"] == text and "signature" not in kept["stripped"]
    assert sender_names("vege@izhuta.com", "Vege@Izhuta.com@ENRON") == {"vege"}


def test_one_line_mail_of_contact_data_is_kept():
    text = "Terrie James 713-853-7727"
    kept, _ = Deduper().process(_row("a", text, sender="terrie.james@enron.com", from_name="Terrie James"))
    assert kept["text"] == text and "signature" not in kept["stripped"]


def test_near_duplicate_with_new_content_keeps_only_the_new_sentences():
    notice = ("Executive Committee Weekly Meeting will be held in the 50th Floor Boardroom. Video connections will be "
              "established with remote locations upon request. Please return this e-mail with your response.")
    deduper = Deduper()
    deduper.process(_row("a", notice + "\nDate: Monday, June 11th"))
    kept, _ = deduper.process(_row("b", notice + "\nDate: Monday, June 18th, agenda item: Q2 trading limits", 60))
    assert kept["duplicate_of"] == "a"
    assert kept["text"] == "Date: Monday, June 18th, agenda item: Q2 trading limits"


def test_near_duplicate_pairs_are_found_with_precision_and_recall_of_at_least_0_9():
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    assert len(pairs) >= 50
    tp = fp = fn = 0
    for i, pair in enumerate(pairs):
        deduper = Deduper()
        deduper.process(_row(f"a{i}", pair["a"]))
        kept, dropped = deduper.process(_row(f"b{i}", pair["b"], 60))
        found = (dropped is not None and dropped["reason"] in ("near_duplicate", "exact_duplicate")) or (
            kept is not None and kept["duplicate_of"] == f"a{i}")
        tp += found and pair["near_duplicate"]
        fp += found and not pair["near_duplicate"]
        fn += (not found) and pair["near_duplicate"]
    assert tp / (tp + fp) >= 0.9 and tp / (tp + fn) >= 0.9


def test_state_carried_between_micro_batches_still_finds_duplicates():
    text = "Board pack for the July meeting: revenue up 12%, headcount flat, two new LNG contracts signed in Dabhol."
    first = Deduper()
    first.process(_row("a", text))
    carried = DedupeState.from_json(first.state.to_json())
    _, exact = Deduper(carried).process(_row("b", text, 30))
    _, near = Deduper(carried).process(_row("c", text + " Sent from my BlackBerry", 40))
    assert exact["duplicate_of"] == "a"
    assert near["reason"] == "near_duplicate" and near["duplicate_of"] == "a"


def test_state_stays_bounded_keeping_the_newest_and_recently_repeated_content(monkeypatch):
    monkeypatch.setattr(dedupe_state, "MAX_REMEMBERED_HASHES", 4)
    monkeypatch.setattr(dedupe_state, "MAX_REMEMBERED_SKETCHES", 2)
    monkeypatch.setattr(dedupe_state, "MAX_REMEMBERED_SENTENCES", 3)
    texts = ["The Dabhol power plant financing closed after the lenders accepted a revised guarantee from the state board.",
             "Our LNG tanker charter in Qatar runs for seven years, with an option to extend it twice at the same rate.",
             "Broadband trading desk launch slipped to March because bandwidth contracts still lack standard terms.",
             "California regulators will hear arguments on the wholesale price cap next week in Sacramento, says counsel.",
             "Azurix submitted its water concession bid in Buenos Aires, pricing tariffs below the incumbent operator."]
    deduper = Deduper()
    deduper.process(_row("m0", texts[0], kind="im"))
    for i, text in enumerate(texts[1:], start=1):
        deduper.process(_row(f"m{i}", text, i, kind="im"))
        deduper.process(_row(f"r{i}", texts[0], i, kind="im"))  # the first text, repeated often, stays remembered
    state = DedupeState.from_json(deduper.state.to_json()).tenant("t1")
    assert len(state.hashes) == 4 and len(state.sentences) == 3
    assert list(state.sketches) == ["m3", "m4"]
    later = Deduper(DedupeState({"t1": state}))
    _, repeat = later.process(_row("x", texts[0], 9, kind="im"))
    assert repeat["reason"] == "exact_duplicate" and repeat["duplicate_of"] == "m0"
    _, resent = later.process(_row("y", texts[4] + " Sent from my BlackBerry", 9, kind="im"))
    assert resent["reason"] == "near_duplicate" and resent["duplicate_of"] == "m4"
    forgotten, _ = later.process(_row("z", texts[1] + " Sent from my BlackBerry", 9, kind="im"))
    assert forgotten is not None and forgotten["duplicate_of"] is None  # beyond the bounds a repeat counts as new


def test_state_written_before_the_bounds_still_loads():
    text = "Board pack for the July meeting: revenue up 12%, headcount flat, two new LNG contracts signed in Dabhol."
    first = Deduper()
    first.process(_row("a", text))
    old = first.state.tenant("t1").to_dict()
    old.update(hashes=dict(old["hashes"]), sentences=sorted(old["sentences"]))  # the earlier layout
    _, exact = Deduper(DedupeState.from_json(json.dumps({"t1": old}))).process(_row("b", text, 30))
    assert exact["reason"] == "exact_duplicate" and exact["duplicate_of"] == "a"


def test_dedupe_transform_yields_kept_dropped_and_state():
    rows = [_row("a", "Lunch with the Dabhol team is on Tuesday at noon.", kind="im"), _row("b", "ok", 1, kind="im"),
            _row("c", "Lunch with the Dabhol team is on Tuesday at noon.", 2, kind="im")]
    with TestPipeline() as p:
        out = p | beam.Create(rows) | Dedupe()
        assert_that(out.kept | "KeptIds" >> beam.Map(lambda u: (u["event_id"], u["text"])),
                    equal_to([("a", "Lunch with the Dabhol team is on Tuesday at noon.")]), label="kept")
        assert_that(out[DROPPED] | "Reasons" >> beam.Map(lambda d: (d["event_id"], d["reason"], d["duplicate_of"])),
                    equal_to([("b", "short_ack", None), ("c", "exact_duplicate", "a")]), label="dropped")
        assert_that(out[STATE] | "Tenants" >> beam.Map(lambda kv: (kv[0], len(json.loads(kv[1])["hashes"]) > 0)),
                    equal_to([("t1", True)]), label="state")


needs_enron = pytest.mark.skipif(not ENRON.exists(), reason="../shared/data absent: Enron skilling-j Maildir needed")


@needs_enron
def test_enron_quoted_reply_is_removed_but_counted():
    kept, _ = Deduper().process(_enron_row("notes_inbox/81."))
    assert kept["text"] == "I think we'll probably keep it at just Paul and me.  I'll let you know if that changes. Regards/Neil."
    assert kept["stripped"]["quoted_reply"] > 500


@needs_enron
def test_enron_sign_off_and_phone_signature_are_removed():
    kept, _ = Deduper().process(_enron_row("notes_inbox/87."))
    assert kept["text"] == (
        "Jeff,\n\nThank you for taking some time to speak with me today regarding the Harvard Business School.  "
        "I will call you at 3pm CST at 713-853-6894.  As a primer for our conversation, I have attached my Bio and "
        "Accomplishments.  I look forward to speaking with you.")
    assert "303-575-6463" not in kept["text"]


@needs_enron
def test_enron_first_sight_signatures_are_removed():
    terrie, _ = Deduper().process(_enron_row("notes_inbox/2."))
    assert terrie["text"].startswith("Jeff,\n\nSo you decided to take this gig")
    assert "in any capacity.\n\nIt is my great pleasure to announce" in terrie["text"]
    assert "713-853-7727" not in terrie["text"] and "Sr. Director" not in terrie["text"]
    alan, _ = Deduper().process(_enron_row("notes_inbox/1."))
    assert alan["text"] == "Jeff - Congratulations!\n\nWill you be attending BillG's CEO Summit 2001 instead of Ken?"


@needs_enron
def test_enron_forward_keeps_the_forwarded_message_without_its_header():
    kept, _ = Deduper().process(_enron_row("notes_inbox/289."))
    assert kept["text"].startswith("Jeff, fyi")
    assert "UC/CSU sued us for breach of contract in March." in kept["text"]
    assert "Subject: UC/CSU" not in kept["text"] and "Forwarded by" not in kept["text"]


def test_state_carried_per_scope_finds_duplicates_in_the_next_micro_batch():
    def scope(row: dict) -> str:
        return row["tenant"] + "/p0"

    first = Deduper(scope_of=scope)
    first.process(_row("a", "Lunch with the Dabhol team is on Tuesday at noon.", kind="im"))
    rows = [_row("b", "Lunch with the Dabhol team is on Tuesday at noon.", 5, kind="im"),
            _row("c", "The Dabhol board call moved to Wednesday 8am.", 6, kind="im")]
    with TestPipeline() as p:
        carried = p | "Carried" >> beam.Create([(s, json.dumps(ts.to_dict())) for s, ts in first.state.tenants.items()])
        out = {"rows": p | "Rows" >> beam.Create(rows), "state": carried} | Dedupe(scope_of=scope)
        assert_that(out[DROPPED] | beam.Map(lambda d: (d["event_id"], d["duplicate_of"])), equal_to([("b", "a")]), label="dropped")
        assert_that(out[STATE] | beam.Map(lambda kv: (kv[0], len(json.loads(kv[1])["hashes"]))), equal_to([("t1/p0", 2)]), label="state")

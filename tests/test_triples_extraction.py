"""Dependency-rule SPO extraction: each construction the issue names gives the expected triples."""
from __future__ import annotations

import pytest

from memtape.schemas import conform
from memtape.transforms.entities import EntityResolver
from memtape.transforms.models import spacy_model
from memtape.transforms.triples import NLP_DISABLE, UNRESOLVED_PRONOUN, Mentions, cached_parses, extract, triple_rows


@pytest.fixture(scope="module")
def nlp():
    from memtape.transforms.models import spacy_model

    return spacy_model()


def spo(nlp, text, **kw):
    rows = triple_rows(nlp(text), tenant="t", raw_event_id="e1", **kw)
    return {(r["subject"], r["predicate"], r["object"]): r for r in rows}


def test_negation_is_kept_as_an_attribute_never_dropped(nlp):
    triples = spo(nlp, "The patient does not take aspirin.")
    assert triples[("The patient", "take", "aspirin")]["negated"] is True


def test_never_and_no_also_negate(nlp):
    assert spo(nlp, "Alice might never sell the house.")[("Alice", "sell", "the house")]["negated"] is True
    assert spo(nlp, "Alice has no car.")[("Alice", "have", "no car")]["negated"] is True


def test_modality_is_kept(nlp):
    row = spo(nlp, "Alice might never sell the house.")[("Alice", "sell", "the house")]
    assert row["modality"] == "might"


def test_passive_with_agent_becomes_active(nlp):
    triples = spo(nlp, "The report was written by Bob.")
    assert set(triples) == {("Bob", "write", "The report")}


def test_negated_passive_keeps_negation(nlp):
    assert spo(nlp, "The invoice was not paid by Acme.")[("Acme", "pay", "The invoice")]["negated"] is True


def test_passive_without_agent_keeps_voice_and_prepositional_object(nlp):
    assert ("The meeting", "be moved to", "Friday") in spo(nlp, "The meeting was moved to Friday.")


def test_conjoined_subjects_and_objects_are_distributed(nlp):
    triples = spo(nlp, "Alice and Bob visited Paris and Rome.")
    assert {("Alice", "visit", "Paris"), ("Alice", "visit", "Rome"), ("Bob", "visit", "Paris"), ("Bob", "visit", "Rome")} <= set(triples)


def test_conjoined_verbs_share_the_subject(nlp):
    assert {("Alice", "call", "Bob"), ("Alice", "email", "Carol")} <= set(spo(nlp, "Alice called Bob and emailed Carol."))


def test_copula(nlp):
    assert ("Paris", "be", "the capital of France") in spo(nlp, "Paris is the capital of France.")


def test_clausal_complement_is_an_object_and_its_own_triple(nlp):
    triples = spo(nlp, "Bob said that Alice would join the team.")
    assert ("Bob", "say", "that Alice would join the team") in triples
    assert triples[("Alice", "join", "the team")]["modality"] == "would"


def test_relative_clause_subject_is_the_noun_it_modifies(nlp):
    triples = spo(nlp, "The engineer who fixed the server left the company.")
    assert {("The engineer", "fix", "the server"), ("The engineer", "leave", "the company")} <= set(triples)


def test_apposition_gives_an_identity_triple(nlp):
    assert ("Carol", "be", "the CEO of Acme") in spo(nlp, "Carol, the CEO of Acme, approved the budget.")


def test_possessive_gives_manager_of(nlp):
    assert ("Bob", "manager of", "Alice") in spo(nlp, "Bob is Alice's manager.")
    assert ("Alice's manager", "manager of", "Alice") in spo(nlp, "Alice's manager approved the budget.")


def test_control_verb_folds_into_the_predicate(nlp):
    assert ("Alice", "want to visit", "Berlin") in spo(nlp, "Alice wants to visit Berlin.")


def test_first_and_second_person_resolve_to_speakers(nlp):
    mentions = Mentions(speakers=["Dana", "Eve"])
    triples = spo(nlp, "I sent you the file on Monday.", sender="Eve", mentions=mentions)
    assert ("Eve", "send", "the file") in triples
    assert ("Eve", "send on", "Monday") in triples


def test_third_person_resolves_only_when_one_person_was_named(nlp):
    mentions = Mentions()
    spo(nlp, "Bob signed the lease.", sender="Dana", mentions=mentions)
    assert ("Bob", "pay", "the rent") in spo(nlp, "He paid the rent.", sender="Eve", mentions=mentions)
    spo(nlp, "Yesterday Carol Jones visited the flat.", sender="Dana", mentions=mentions)
    row = spo(nlp, "She liked the kitchen.", sender="Eve", mentions=mentions)[("She", "like", "the kitchen")]
    assert row["flags"] == [UNRESOLVED_PRONOUN]


def test_rows_conform_to_the_triples_schema_with_provenance_and_stable_ids(nlp):
    text = "Alice emailed Bob. Carol, the CEO of Acme, approved the budget."
    resolver = EntityResolver("t")
    rows = triple_rows(nlp(text), tenant="t", raw_event_id="e1", episode_id="ep", resolver=resolver)
    table = conform("triples", rows)
    assert table.num_rows == len(rows) >= 3
    approve = next(r for r in rows if r["predicate"] == "approve")
    assert text[approve["char_start"]:approve["char_end"]] == "Carol, the CEO of Acme, approved the budget"
    again = triple_rows(nlp(text), tenant="t", raw_event_id="e1", episode_id="ep")
    assert [r["triple_id"] for r in rows] == [r["triple_id"] for r in again]
    assert approve["subject_entity_id"] == resolver.mention("Carol", None)


def test_punctuation_only_modifier_is_no_argument(nlp):
    """A dangling "-" parsed as a modifier used to become an empty extra argument and crash the extractor."""
    triples = spo(nlp, "Bob says the slides flight moved to server number 0-0.")
    assert ("Bob", "say", "the slides flight moved to server number 0-0") in triples
    assert all(s and p and o for s, p, o in triples)


def test_a_parse_is_cached_per_text_and_the_cached_doc_gives_the_same_triples():
    nlp = spacy_model(disable=NLP_DISABLE)
    texts = ["Dana moved the budget review to Friday (cache test).", "Eve sold the old car (cache test)."]
    first = cached_parses(nlp, texts, 8)
    second = cached_parses(nlp, texts[::-1], 8)
    assert second == first[::-1]  # the very same Doc objects: nothing parsed again
    assert [extract(d) for d in first] == [extract(d) for d in nlp.pipe(texts)]

"""Every ordering the site states ("better", "beats", "faster", ...) is declared in posts/claims.toml and
supported by its records: per-seed paired differences for models, interleaved repeats for speed.

The guard is checked on made-up posts and records too, so that it is seen to fail: an undeclared
ranking, a claim on two seeds, seeds that disagree, a t-test that does not reach 5%, a speed claim that one
repeat contradicts. The t-test is checked against SciPy's.
"""

import json

import numpy as np
import pytest
import scipy.stats

import claims


def test_every_ordering_on_the_site_is_declared_and_supported():
    found = claims.problems(claims.read_claims())
    assert not found, "\n".join(found)


def a_post(tmp_path, text):
    path = tmp_path / "post.rst"
    path.write_text(text)
    return path


def declared(*claim_entries, not_a_ranking=()):
    return {"claim": list(claim_entries), "not_a_ranking": list(not_a_ranking)}


def a_record(tmp_path, value, name="record.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"comparison": value}))
    return str(path)


def per_seed(*differences):
    return {"per_seed": [{"difference": d, "stderr": 0.05} for d in differences]}


SENTENCES = ["The IWAE beats the VAE.", "Two flows help the model.", "JAX is faster than TensorFlow.",
             "It was the worst model of this run."]  # fmt: skip


@pytest.mark.parametrize("sentence", SENTENCES)
def test_an_undeclared_ordering_is_found(tmp_path, sentence):
    post = a_post(tmp_path, f"Some prose first. {sentence} And more prose.\n")
    found = claims.problems(declared(), {"post.rst": post})
    assert len(found) == 1 and "undeclared ordering" in found[0] and sentence[:-1] in found[0]


def test_an_option_a_reference_and_a_listing_are_not_prose(tmp_path):
    post = a_post(tmp_path, "Run ``train.py --help`` first.\n\n.. [#r] Better Bounds. 2018.\n   More of it.\n\n"
                            ".. listing:: a.py python\n   :start-after: better\n\nPlain prose.\n")  # fmt: skip
    assert claims.problems(declared(), {"post.rst": post}) == []


def test_a_declared_sentence_that_is_gone_is_reported(tmp_path):
    post = a_post(tmp_path, "Nothing to see.\n")
    entry = {"source": "post.rst", "says": "the best any model can do", "why": "a bound"}
    (found,) = claims.problems(declared(not_a_ranking=[entry]), {"post.rst": post})
    assert "declared sentence not found" in found


@pytest.mark.parametrize(
    "differences, supported",
    [
        ((-1.8, -1.6), False),  # two seeds
        ((-1.8, -1.6, 0.3), False),  # one seed disagrees
        ((-1.8, -0.2, -0.9), False),  # all agree, but t = -2.7 < t(0.975, 2) = 4.30 in size
        ((-1.8, -1.6, -1.7), True),
        ((-1.8, -1.6, -1.7, -1.2, -2.0), True),
    ],
)
def test_a_seeds_claim_needs_three_seeds_that_agree_and_a_t_test_at_5_percent(tmp_path, differences, supported):
    record = a_record(tmp_path, per_seed(*differences))
    evidence = {"kind": "seeds", "record": record, "key": "comparison", "sign": "negative"}
    assert claims.check_evidence(evidence)[0] is supported
    if len(differences) >= claims.MIN_SEEDS and all(d < 0 for d in differences):  # the test is SciPy's
        t, p = scipy.stats.ttest_1samp(differences, 0.0)
        assert bool(p < 0.05) is supported
        assert claims.T_975[len(differences) - 2] == pytest.approx(
            scipy.stats.t.ppf(0.975, len(differences) - 1), abs=1e-3
        )


def test_the_t_table_is_scipys():
    assert claims.T_975 == pytest.approx([scipy.stats.t.ppf(0.975, dof) for dof in range(1, 11)], abs=1e-3)


@pytest.mark.parametrize(
    "worst_pair, inverse, supported",
    [(1.35, False, True), (0.97, False, False), (0.8, True, True), (1.02, True, False)],
    ids=["slower-over-faster-all-agree", "one-repeat-disagrees", "inverse-all-agree", "inverse-one-disagrees"],
)
def test_a_speed_claim_needs_every_interleaved_repeat_to_agree(tmp_path, worst_pair, inverse, supported):
    """The smallest of the slower's times over the faster's must exceed 1; or, as ``inverse``, the largest of the
    faster's over the slower's must stay below 1."""
    evidence = {"kind": "interleaved", "record": a_record(tmp_path, worst_pair), "key": "comparison"}
    if inverse:
        evidence["inverse"] = True
    assert claims.check_evidence(evidence)[0] is supported


def test_a_claim_on_a_missing_record_key_is_not_supported(tmp_path):
    post = a_post(tmp_path, "On this machine JAX is faster than TensorFlow.\n")
    evidence = {"kind": "interleaved", "record": a_record(tmp_path, 1.5), "key": "other"}
    entry = {"source": "post.rst", "says": "JAX is faster", "evidence": [evidence]}
    (found,) = claims.problems(declared(entry), {"post.rst": post})
    assert "is not supported by other" in found and "KeyError" in found


def test_the_site_would_fail_with_one_withdrawn_claim_back(tmp_path):
    """The flows post's withdrawn sentence, put back, is found."""
    source = claims.REPO_ROOT / "posts" / "normalizing-flows-in-keras.rst"
    post = tmp_path / "normalizing-flows-in-keras.rst"
    post.write_text(source.read_text().replace("On the same test images, two IAF steps raised",
                                               "In this run both flows give a better model. On the same test "
                                               "images, two IAF steps raised"))  # fmt: skip
    found = claims.problems(claims.read_claims(), {"posts/normalizing-flows-in-keras.rst": post})
    assert any("'better'" in line and "both flows give a better model" in line for line in found)


def test_per_seed_numbers_are_their_t_statistic(tmp_path):
    rng = np.random.default_rng(0)
    differences = list(rng.normal(-1.0, 0.3, size=4))
    _, line = claims.seeds_support(per_seed(*differences), -1)
    t = scipy.stats.ttest_1samp(differences, 0.0).statistic
    assert f"t = {t:+.1f}" in line

"""`decide_variant`, the serving rule over every (backend, precision) variant, on hand-made
candidates: the order that breaks a tie, measured before unmeasured, what a request narrows, and
every reason and refusal word for word (`make mutation` runs these; ADR 0021)."""

from __future__ import annotations

from pathlib import Path

import pytest

from food_assets.ml.errors import ConfigError
from food_assets.ml.inference.serving import Candidate, decide, decide_variant

FIX = "re-materialize onnx_<name> (int8 and the OpenVINO variants are on by default)"


def c(backend: str, precision: str, ms: float | None, ok: bool = True, why: str = "") -> Candidate:
    why = why or ("passed its accuracy gate (d)" if ok else "it failed its accuracy gate (d)")
    verdict = "passed" if ok else "failed its gate"
    timed = {1: ms} if ms is not None else {}
    path = Path(f"{backend}-{precision}.onnx")
    return Candidate(backend, precision, path, ok, why, verdict, timed)


ALL = [
    c("onnxruntime", "fp32", 10.0, why="is the reference"),
    c("onnxruntime", "int8", 6.0),
    c("openvino", "fp32", 5.0),
    c("openvino", "bf16", 3.0, ok=False),
    c("openvino", "int8", 4.0),
]


def test_a_tie_goes_to_the_earlier_variant_whatever_the_order_given() -> None:
    """Breakage caught: the tie broken by the order the candidates come in (the sort key
    dropped), an unknown variant sorted before the known ones (or failing the sort)."""
    tied = [c("openvino", "int8", 5.0), c("openvino", "fp32", 5.0), c("onnxruntime", "int8", 5.0)]
    unknown = c("tensorrt", "fp32", 5.0)
    for given in (tied, tied[::-1], [unknown, *tied]):
        assert decide_variant("auto", "auto", given)[0].name == "onnxruntime/int8"
    assert decide_variant("auto", "auto", [unknown, tied[0]])[0].name == "openvino/int8"


def test_a_measured_variant_beats_an_unmeasured_one() -> None:
    """Breakage caught: an unmeasured variant taken for 0 ms (or compared as None), measured
    ones ranked after unmeasured ones."""
    given = [c("onnxruntime", "fp32", None), c("openvino", "fp32", 50.0)]
    assert decide_variant("auto", "auto", given)[0].name == "openvino/fp32"
    unmeasured = [c("openvino", "fp32", None), c("onnxruntime", "fp32", None)]
    assert decide_variant("auto", "auto", unmeasured)[0].name == "onnxruntime/fp32"


def test_the_reason_says_what_was_asked_and_why_it_won() -> None:
    """Breakage caught: a request naming one of backend or precision answered as if both were
    named (or the reverse), the asked words joined wrongly, the passed-over list lost."""
    best, why = decide_variant("auto", "auto", ALL)
    assert best.name == "openvino/int8"
    assert why == (
        "auto: openvino/int8, the fastest that passed its gates, 4 ms at batch 1; "
        "openvino bf16 not served (failed its gate)"
    )
    assert decide_variant("fp32", "auto", ALL)[1] == (
        "fp32: openvino/fp32, the fastest that passed its gates, 5 ms at batch 1"
    )
    assert decide_variant("auto", "onnxruntime", ALL)[1] == (
        "onnxruntime: onnxruntime/int8, the fastest that passed its gates, 6 ms at batch 1"
    )
    best, why = decide_variant("int8", "onnxruntime", ALL)
    assert (best.name, why) == (
        "onnxruntime/int8",
        "onnxruntime/int8 requested; it passed its accuracy gate (d)",
    )
    assert decide_variant("fp32", "onnxruntime", ALL)[1] == (
        "onnxruntime/fp32 requested; it is the reference"
    )


def test_each_refusal_word_for_word() -> None:
    """Breakage caught: a refusal naming the wrong fix (`--backend onnxruntime` where fp32 was
    asked on OpenVINO, `--precision fp32` otherwise), the reasons of several matches not all
    listed, the no-fp32-file message lost for an explicit `--backend onnxruntime`."""
    with pytest.raises(ConfigError) as err:
        decide_variant("bf16", "auto", ALL)
    assert str(err.value) == (
        "the bf16 export cannot be served: it failed its accuracy gate (d). Use --precision fp32 "
        f"(or auto), or {FIX} with another calibration (its int8 config: method, "
        "calibration_images)"
    )
    failed_fp32 = [c("openvino", "fp32", 5.0, ok=False), c("onnxruntime", "fp32", None)]
    with pytest.raises(ConfigError) as err:
        decide_variant("fp32", "openvino", failed_fp32)
    assert str(err.value) == (
        "the openvino fp32 export cannot be served: it failed its accuracy gate (d). Use "
        f"--backend onnxruntime, or {FIX} with another calibration (its int8 config: method, "
        "calibration_images)"
    )
    two = [c("openvino", "int8", 1.0, ok=False, why="w1"), c("onnxruntime", "int8", 2.0, ok=False,
                                                            why="w2")]  # fmt: skip
    with pytest.raises(ConfigError) as err:
        decide_variant("int8", "auto", two)
    assert str(err.value).startswith(
        "the int8 export cannot be served: onnxruntime/int8: w2; openvino/int8: w1. Use"
    )
    with pytest.raises(ConfigError) as err:
        decide_variant("auto", "auto", two)
    assert str(err.value) == (
        f"no servable export here (onnxruntime/int8: w2; openvino/int8: w1); {FIX}"
    )
    no_file = [Candidate("onnxruntime", "fp32", None, False, "none", "none")]
    for backend in ("auto", "onnxruntime"):
        with pytest.raises(ConfigError) as err:
            decide_variant("fp32", backend, no_file)
        assert str(err.value) == (f"there is no fp32 export here; {FIX}, or use --precision auto")


def test_decide_serves_fp32_when_int8_is_not_timed_and_names_a_refused_int8() -> None:
    """`decide`, the ONNX Runtime pair: an int8 without a ratio is not taken for faster, and a
    refused int8 is named with its verdict. Breakage caught: an untimed int8 given a latency
    (served before the reference), the passed-over verdict lost."""
    args = {"has_fp32": True, "int8_why": "w"}
    assert decide("auto", int8_ok=True, ratio=None, **args)[0] == "fp32"
    assert decide("auto", int8_ok=False, ratio=0.5, **args) == (
        "fp32",
        "auto: onnxruntime/fp32, the fastest that passed its gates, 1.00x fp32 latency at batch "
        "1; onnxruntime int8 not served ()",
    )


def test_every_passed_over_variant_is_named() -> None:
    """In VARIANTS order. Breakage caught: the passed-over variants joined by anything but
    `, `."""
    given = [*ALL, c("onnxruntime", "int8", 1.0, ok=False)][1:]
    assert decide_variant("auto", "auto", given)[1].endswith(
        "; onnxruntime int8 not served (failed its gate), openvino bf16 not served (failed its "
        "gate)"
    )

# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import random
import re

import pytest

from scripts.data.prompts import (
    ANSWER_ONLY_INSTRUCTION,
    FORMAT_INSTRUCTION,
    QUESTION_TEMPLATES,
    ParsedCompletion,
    build_user_prompt,
    clean_reasoning,
    describe_location,
    has_control_token,
    parse_completion,
    remove_tokens,
    render_answer,
    render_completion,
    render_question,
    render_reasoning,
    resolve_answer,
    strip_coordinates,
    text_fields,
)
from scripts.data.vocabulary import ANATOMIES, LESION_TYPES, MODALITIES
from scripts.networks import SEG_TOKEN

SYNTHETIC = {
    "disease": "glioma", "modality": "MRI", "anatomy": "head", "distractor": "cyst", "num_targets": 2,
    "num_distractors": 1, "target_appearance": "bright, irregular, with a blurred margin",
    "distractor_appearance": "dark, round, with a sharp margin",
}
VALID = "<think> A bright irregular region differs from the dark cyst. </think>" \
        "<answer> The glioma is located at [10,20,60,70], [5,6,7,8]. <seg> </answer>"
NUMBERS = re.compile(r"\d")


# ------------------------------------------------------------------------------------------------ templates
def test_questions_vary_and_name_the_disease():
    questions = {render_question(SYNTHETIC, random.Random(seed)) for seed in range(200)}
    assert len(questions) >= 20  # many phrasings: templates x modality x anatomy wordings
    assert all("glioma" in question for question in questions)
    assert len(QUESTION_TEMPLATES) >= 12


@pytest.mark.parametrize("lesion", LESION_TYPES, ids=lambda lesion: lesion.disease)
def test_every_lesion_type_renders_a_question_and_reasoning_without_numbers(lesion):
    record = {"disease": lesion.disease, "modality": lesion.modality, "anatomy": lesion.anatomy}
    rng = random.Random(0)
    assert lesion.disease in render_question(record, rng)
    reasoning = render_reasoning(record, [[1, 2, 30, 40]], rng, (100, 100))
    assert lesion.disease in reasoning and not NUMBERS.search(reasoning.replace(lesion.disease, ""))


def test_templates_cover_every_modality_and_anatomy_word():
    for modality in MODALITIES:
        for anatomy in ANATOMIES:
            question = render_question({"disease": "lesion", "modality": modality, "anatomy": anatomy}, random.Random(1))
            assert "{" not in question and "}" not in question


def test_reasoning_uses_the_appearances_to_tell_target_from_distractor():
    reasoning = render_reasoning(SYNTHETIC, [[0, 0, 10, 10], [80, 80, 99, 99]], random.Random(3), (100, 100))
    assert SYNTHETIC["target_appearance"] in reasoning
    assert SYNTHETIC["distractor_appearance"] in reasoning and "cyst" in reasoning
    assert "two" in reasoning  # the number of targets, in words
    assert "upper left" in reasoning and "lower right" in reasoning
    assert not NUMBERS.search(reasoning)


def test_reasoning_for_an_image_without_the_lesion_says_so():
    reasoning = render_reasoning({**SYNTHETIC, "num_targets": 0}, [], random.Random(0), (100, 100))
    assert "no" in reasoning.lower() and "glioma" in reasoning and SYNTHETIC["distractor_appearance"] in reasoning


def test_reasoning_without_distractors_does_not_invent_them():
    record = {**SYNTHETIC, "num_distractors": 0}
    for seed in range(10):
        assert SYNTHETIC["distractor_appearance"] not in render_reasoning(record, [[1, 1, 5, 5]], random.Random(seed))


def test_same_seed_same_text():
    first = render_reasoning(SYNTHETIC, [[1, 1, 5, 5]], random.Random(9)), render_question(SYNTHETIC, random.Random(9))
    second = render_reasoning(SYNTHETIC, [[1, 1, 5, 5]], random.Random(9)), render_question(SYNTHETIC, random.Random(9))
    assert first == second


def test_text_fields_for_a_datalist_record_accept_any_rng():
    import numpy as np

    record = {**SYNTHETIC, "boxes": [[0, 0, 10, 10]]}
    fields = text_fields(record, np.random.default_rng(0), image_size=(100, 100))
    assert set(fields) == {"question", "reasoning"} and "upper left" in fields["reasoning"]
    assert text_fields(record, 3) == text_fields(record, random.Random(3))
    assert not NUMBERS.search(text_fields(record, 1)["reasoning"])


def test_describe_location():
    assert describe_location([0, 0, 10, 10], (300, 300)) == "in the upper left part of the image"
    assert describe_location([140, 140, 160, 160], (300, 300)) == "centrally"
    assert describe_location([140, 280, 160, 300], (300, 300)) == "in the lower part of the image"


# ------------------------------------------------------------------------------------------------ answers
def test_answer_formats():
    assert render_answer("glioma", [[1, 2, 3, 4], [5, 6, 7, 8]]) == "The glioma is located at [1,2,3,4], [5,6,7,8]."
    assert render_answer("glioma", []) == "There is no glioma in this image."
    with pytest.raises(ValueError, match="4 integers"):
        render_answer("glioma", [[1.5, 2, 3, 4]])


def test_completion_format_is_exactly_the_contract():
    completion = render_completion(" Some reasoning. ", render_answer("glioma", [[1, 2, 3, 4]]))
    assert completion == ("<think> Some reasoning. </think><answer> The glioma is located at [1,2,3,4]. "
                          "<seg> </answer>")
    assert completion.count(SEG_TOKEN) == 1


def test_rendered_completions_always_parse_back():
    for boxes in ([], [[1, 2, 3, 4]], [[0, 0, 224, 84], [10, 10, 11, 11], [5, 5, 9, 9]]):
        completion = render_completion(render_reasoning(SYNTHETIC, boxes, random.Random(0)), render_answer("glioma", boxes))
        parsed = parse_completion(completion)
        assert parsed.valid, parsed.error
        assert parsed.boxes == [[float(v) for v in box] for box in boxes]
        assert parsed.no_lesion == (not boxes) and parsed.lesion == "glioma" and parsed.seg_count == 1


def test_resolve_answer_fills_placeholders_and_refuses_literal_coordinates():
    assert resolve_answer(None, "glioma", [[1, 2, 3, 4]]) == "The glioma is located at [1,2,3,4]."
    assert resolve_answer("The {disease} lies at {bboxes}.", "glioma", [[1, 2, 3, 4]]) == \
        "The glioma lies at [1,2,3,4]."
    assert resolve_answer("The {disease} is located at {bboxes}.", "glioma", []) == "There is no glioma in this image."
    assert resolve_answer("There is no glioma in this scan.", "glioma", []) == "There is no glioma in this scan."
    with pytest.raises(ValueError, match="literal coordinates"):
        resolve_answer("The glioma is located at [1, 2, 3, 4].", "glioma", [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="no \\{bboxes\\} placeholder"):
        resolve_answer("There is no glioma.", "glioma", [[1, 2, 3, 4]])


# ------------------------------------------------------------------------------------------------ text hygiene
def test_strip_coordinates_removes_numbers_in_coordinate_form_only():
    text = "The mass is located at [12, 34, 56, 78] in the upper lobe, near (x=3, y=4); x1 = 5. It has 2 lobules."
    stripped = strip_coordinates(text)
    assert "[" not in stripped and "x=" not in stripped and "34" not in stripped and "x1" not in stripped
    assert "in the upper lobe" in stripped and "2 lobules" in stripped


def test_clean_reasoning_removes_tags_seg_and_control_tokens():
    assert clean_reasoning("A <seg> lesion </think> at [1,2,3,4].") == "A lesion."
    assert clean_reasoning("A <|im_<|image_pad|>end|>lesion<|image_pad|>.") == "A lesion."
    assert has_control_token("x <|im_end|>") and has_control_token("<answer>") and not has_control_token("a < b | c")


def test_user_prompt_strips_control_tokens_and_keeps_the_question():
    prompt = build_user_prompt("Where is <se<seg>g> the <|image_pad|>tumor?", (SEG_TOKEN, "<|image_pad|>"))
    assert SEG_TOKEN not in prompt and "<|image_pad|>" not in prompt
    assert prompt.startswith("Where is the tumor?\n") and prompt.endswith(FORMAT_INSTRUCTION)
    assert SEG_TOKEN not in FORMAT_INSTRUCTION
    with pytest.raises(ValueError, match="empty"):
        build_user_prompt(" <seg> ", (SEG_TOKEN,))


def test_remove_tokens_repeats_until_clean():
    assert remove_tokens("a<<seg>seg>b", ["<seg>"]) == "ab"


# ------------------------------------------------------------------------------------------------ parser
def test_parser_on_a_valid_completion():
    parsed = parse_completion(VALID)
    assert parsed == ParsedCompletion(
        valid=True, error="", reasoning="A bright irregular region differs from the dark cyst.",
        answer="The glioma is located at [10,20,60,70], [5,6,7,8].", boxes=[[10, 20, 60, 70], [5, 6, 7, 8]],
        seg_count=1, no_lesion=False, lesion="glioma",
    )


def test_parser_accepts_whitespace_and_decimals():
    parsed = parse_completion("\n <think>\nr\n</think>\n<answer>The cyst is located at [1.5, 2, 3 ,4].<seg></answer>\n")
    assert parsed.valid, parsed.error
    assert parsed.boxes == [[1.5, 2.0, 3.0, 4.0]]


def test_parser_no_lesion_answer():
    parsed = parse_completion("<think> Nothing bright. </think><answer> There is no glioma in this image. <seg> </answer>")
    assert parsed.valid and parsed.no_lesion and parsed.boxes == [] and parsed.lesion == "glioma"


@pytest.mark.parametrize(
    ("text", "error", "seg_count"),
    [
        (VALID[:30], "exactly one </think>", 0),  # truncated inside the reasoning
        (VALID[:-5], "exactly one </answer>", 1),  # truncated before the end of the answer
        ("The glioma is located at [10,20,60,70]. <seg>", "exactly one <think>", 1),  # tag-less
        (VALID.replace("<seg>", "<seg> <seg>"), "exactly one <seg>", 2),  # multi-<seg>
        (VALID.replace(" <seg>", ""), "exactly one <seg>", 0),  # no <seg>
        (VALID.replace("</think>", "<seg></think>").replace(" <seg> </answer>", "</answer>"), "inside the answer", 1),
        ("garbage \x00\ufffd 🤖 [[[ <answer", "exactly one <think>", 0),  # garbage
        ("", "exactly one <think>", 0),
        ("<think>  </think><answer> The glioma is located at [1,2,3,4]. <seg> </answer>", "reasoning", 1),
        ("Sure! " + VALID, "before <think>", 1),
        (VALID + " Anything else?", "after </answer>", 1),
        (VALID.replace("</think>", "</think> and "), "between </think> and <answer>", 1),
        ("<answer> The glioma is located at [1,2,3,4]. <seg> </answer><think> r </think>", "follow the reasoning", 1),
        ("</think> r <think><answer> The glioma is located at [1,2,3,4]. <seg> </answer>", "comes before", 1),
        (VALID.replace("[10,20,60,70]", "[60,20,10,70]"), "malformed box", 1),
        (VALID.replace("[10,20,60,70]", "[10,20,60]"), "malformed box", 1),
        (VALID.replace("[10,20,60,70]", "[-1,20,60,70]"), "malformed box", 1),
        (VALID.replace("[10,20,60,70]", "[a,b,c,d]"), "malformed box", 1),
        (VALID.replace("[10,20,60,70]", "[10,20,60,70"), "unbalanced", 1),
        (VALID.replace("[10,20,60,70]", "[[10,20,60,70]]"), "unbalanced or nested", 1),
        ("<think> r </think><answer> I am not sure. <seg> </answer>", "no box", 1),
        ("<think> r </think><answer> There is no glioma in this image, see [1,2,3,4]. <seg> </answer>", "both", 1),
    ],
)
def test_parser_rejects_malformed_completions_with_a_reason(text, error, seg_count):
    parsed = parse_completion(text)
    assert not parsed.valid
    assert error in parsed.error
    assert parsed.seg_count == seg_count


def test_parser_keeps_what_it_could_read_from_an_invalid_completion():
    parsed = parse_completion(VALID.replace("<seg>", "<seg><seg>"))
    assert not parsed.valid and parsed.boxes == [[10, 20, 60, 70], [5, 6, 7, 8]] and parsed.reasoning


@pytest.mark.parametrize("value", [None, 42, 3.5, ["<think>"], {"a": 1}, object(), b"\xff\xfe<think>", bytearray(b"x")])
def test_parser_never_raises_on_non_text(value):
    parsed = parse_completion(value)
    assert isinstance(parsed, ParsedCompletion) and not parsed.valid and parsed.error


def test_parser_decodes_bytes():
    assert parse_completion(VALID.encode("utf-8")).valid


def test_parser_on_huge_and_adversarial_inputs_stays_linear():
    huge = "<think>" + " " * 90_000 + "r</think><answer>There is no" + " x" * 5_000 + "<seg></answer>"
    assert not parse_completion(huge).valid  # long answers are not read as sentences
    too_long = VALID + " " * 200_000
    parsed = parse_completion(too_long)
    assert not parsed.valid and "characters" in parsed.error and parsed.seg_count == 1
    nested = "<think>r</think><answer>" + "[" * 20_000 + "<seg></answer>"
    assert not parse_completion(nested).valid


def test_parser_with_random_mutations_of_a_valid_completion_never_raises():
    rng = random.Random(0)
    alphabet = list("<>/[],. 0123456789") + ["<seg>", "<think>", "</answer>", "\n", "é"]
    for _ in range(500):
        chars = list(VALID)
        for _ in range(rng.randint(1, 5)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(alphabet))
            if chars and rng.random() < 0.5:
                del chars[rng.randrange(len(chars))]
        parsed = parse_completion("".join(chars))
        assert isinstance(parsed.valid, bool) and (parsed.valid or parsed.error)


def test_answer_only_completions_for_the_no_cot_ablation():
    answer = render_answer("liver tumor", [[10, 20, 60, 70]])
    completion = render_completion(None, answer)
    assert completion == f"<answer> {answer} {SEG_TOKEN} </answer>"
    assert not parse_completion(completion).valid  # the reasoning is required by default
    parsed = parse_completion(completion, require_reasoning=False)
    assert parsed.valid and parsed.boxes == [[10.0, 20.0, 60.0, 70.0]] and parsed.reasoning == ""
    # with the reasoning it is valid either way; a think block that is there is still checked
    assert parse_completion(render_completion("a dark region", answer), require_reasoning=False).valid
    broken = parse_completion(f"<think> </think>{completion}", require_reasoning=False)
    assert not broken.valid and "reasoning" in broken.error
    for text, error in [(f"so: {completion}", "before <answer>"), (f"{completion} done", "after </answer>"),
                        (completion.replace(SEG_TOKEN, ""), "exactly one"), ("<answer> x", "exactly one </answer>")]:
        result = parse_completion(text, require_reasoning=False)
        assert not result.valid and error in result.error, (text, result.error)
    assert build_user_prompt("Where?", reasoning=False).endswith(ANSWER_ONLY_INSTRUCTION)
    assert build_user_prompt("Where?").endswith(FORMAT_INSTRUCTION)

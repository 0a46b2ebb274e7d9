# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The Slicer module's Slicer-free package (bundle/slicer/CoreSeg/CoreSegLib) and the module's source."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from CoreSegLib import CoreSegClient, ServerError, parse_multipart, reasoning_report, segment_name
from requests_toolbelt import MultipartEncoder

from .conftest import SLICER_LIB

MODULE_FILES = sorted(SLICER_LIB.rglob("*.py"))
LIB_FILES = sorted((SLICER_LIB / "CoreSegLib").glob("*.py"))


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda path: path.name)
def test_module_sources_parse_as_python_3_9(path):
    """Slicer 5.8 embeds Python 3.9: no newer syntax in the module or its package."""
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", LIB_FILES, ids=lambda path: path.name)
def test_client_package_imports_neither_slicer_nor_qt(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"slicer", "qt", "vtk", "ctk", "cgi", "monailabel", "scripts"}, imported
    assert imported <= set(sys.stdlib_module_names) | {"requests", "CoreSegLib"}, imported


def test_slicer_module_has_the_scripted_module_quartet():
    tree = ast.parse((SLICER_LIB / "CoreSeg.py").read_text())
    classes = {node.name: [base.id for base in node.bases if isinstance(base, ast.Name)]
               for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes["CoreSeg"] == ["ScriptedLoadableModule"]
    assert classes["CoreSegWidget"] == ["ScriptedLoadableModuleWidget"]
    assert classes["CoreSegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["CoreSegTest"] == ["ScriptedLoadableModuleTest"]
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in (SLICER_LIB / "CMakeLists.txt").read_text()


def test_multipart_answer_as_monailabel_encodes_it(tmp_path):
    params = {"question": "Where?", "reasoning": "r", "boxes": [[1.5, 2, 3, 4]]}
    encoder = MultipartEncoder(fields={"params": (None, json.dumps(params), "application/json"),
                                       "image": ("label.nii.gz", b"\x00\x01binary\r\n--", "application/gzip")})
    parts = parse_multipart(encoder.content_type, encoder.to_string())
    assert json.loads(parts["params"][1]) == params
    assert parts["image"] == ("label.nii.gz", b"\x00\x01binary\r\n--")
    with pytest.raises(ValueError, match="Not a multipart"):
        parse_multipart("application/json", b"{}")


def test_client_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="http://"):
        CoreSegClient("127.0.0.1:8000")
    client = CoreSegClient("http://127.0.0.1:9", timeout=2)  # the discard port: nothing listens
    with pytest.raises(ValueError, match="exactly one"):
        client.infer("coreseg", "Where?", image_id="a", session_id="b")
    with pytest.raises(ServerError, match="Cannot reach") as raised:
        client.info()
    assert raised.value.status_code is None


def test_segment_names_and_reports():
    entry = {"reasoning": "Bright, round.", "answer": "Tumor at [1,2,3,4].", "boxes": [[1.0, 2.5, 3, 4]],
             "format_valid": True, "no_lesion": False}
    assert segment_name("  Where is\nthe tumor? ", entry) == "Where is the tumor?"
    assert len(segment_name("why " * 40, entry)) == 60
    assert segment_name("q", {**entry, "format_valid": False, "format_error": "no <seg>"}) == "q (invalid answer)"
    assert segment_name("q", {**entry, "no_lesion": True}) == "q (none found)"
    volume = {"question": "q", "slices": [{**entry, "slice_index": 0, "slice_axis": 2},
                                          {**entry, "slice_index": 1, "slice_axis": 2, "format_valid": False,
                                           "format_error": "no <answer> block"}]}
    report = reasoning_report(volume)
    assert report.startswith("Question: q")
    assert "Slice 0 (axis 2)" in report and "Slice 1 (axis 2)" in report
    assert "[1, 2.5, 3, 4]" in report and "Invalid answer format: no <answer> block" in report
    assert segment_name("q", volume) == "q"  # one usable answer is enough to name it plainly


def test_upload_round_trip_against_the_server(coreseg_server, tmp_path):
    client = CoreSegClient(coreseg_server.url, timeout=300)
    result = client.infer("coreseg", "Where is the liver tumor?", image_file=coreseg_server.studies / "ct2d.png",
                          output_dir=tmp_path)
    assert result.label_path.parent == tmp_path and result.label_path.suffix == ".png"
    assert set(result.params) >= {"question", "reasoning", "answer", "boxes", "format_valid", "completion"}
    report = reasoning_report(result.params)
    assert result.params["answer"] in report
    assert Path(result.label_path).stat().st_size > 0

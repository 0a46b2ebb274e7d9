# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""3D Slicer scripted module: ask CORE-Seg a question about the displayed volume, get a segment and the reasoning.

The module sends the volume (saved to a temporary NRRD) and the question to a CORE-Seg MONAI Label server
(``bundle/monailabel_app``), imports the returned label as a segment named after the question and shows the
reasoning; the reasoning is stored with the segmentation (segment tag ``CoreSeg.Reasoning``) and in a text node,
so it is saved with the scene. All HTTP and parsing code is in ``CoreSegLib`` (no Slicer imports); the request runs
in a worker thread while the main thread keeps processing Qt events, so the UI does not freeze.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import qt
import slicer
import vtk
from CoreSegLib import CoreSegClient, reasoning_report, segment_name
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

REASONING_TAG = "CoreSeg.Reasoning"
QUESTION_TAG = "CoreSeg.Question"
SETTINGS_SERVER_URL = "CoreSeg/serverUrl"
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
TEST_SERVER_ENV = "CORESEG_TEST_SERVER_URL"


class CoreSeg(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CORE-Seg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["CORE-Seg bundle contributors"]
        self.parent.helpText = (
            "Ask a clinical question about the displayed image (e.g. 'Where is the liver tumor?'). A CORE-Seg "
            "MONAI Label server answers with its reasoning and the lesion mask, which becomes a segment. "
            "Research use only.")
        self.parent.acknowledgementText = "CORE-Seg bundle (MONAI), served with MONAI Label."


class CoreSegWidget(ScriptedLoadableModuleWidget):
    """Server URL, input volume, question, slice choice, Ask button and the reasoning panel."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = CoreSegLogic()
        form = qt.QFormLayout()
        box = qt.QGroupBox("Ask CORE-Seg")
        box.setLayout(form)
        self.layout.addWidget(box)

        self.serverUrlEdit = qt.QLineEdit(slicer.util.settingsValue(SETTINGS_SERVER_URL, DEFAULT_SERVER_URL))
        self.serverUrlEdit.toolTip = "URL of the CORE-Seg MONAI Label server (docs/serving.md)."
        form.addRow("Server:", self.serverUrlEdit)
        self.modelCombo = qt.QComboBox()
        self.refreshButton = qt.QPushButton("Connect")
        row = qt.QHBoxLayout()
        row.addWidget(self.modelCombo, 1)
        row.addWidget(self.refreshButton)
        form.addRow("Model:", row)

        self.volumeSelector = slicer.qMRMLNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.noneEnabled = False
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        form.addRow("Image:", self.volumeSelector)

        self.questionEdit = qt.QPlainTextEdit()
        self.questionEdit.setPlaceholderText("Where is the liver tumor?")
        self.questionEdit.setMaximumHeight(70)
        form.addRow("Question:", self.questionEdit)
        self.allSlicesCheck = qt.QCheckBox("Every slice (otherwise the slice shown in the Red view)")
        form.addRow("", self.allSlicesCheck)

        self.askButton = qt.QPushButton("Ask")
        self.askButton.enabled = False
        form.addRow(self.askButton)
        self.statusLabel = qt.QLabel("")
        form.addRow(self.statusLabel)
        self.reasoningView = qt.QPlainTextEdit()
        self.reasoningView.setReadOnly(True)
        form.addRow("Reasoning:", self.reasoningView)
        self.layout.addStretch(1)

        self.refreshButton.connect("clicked(bool)", self.onConnect)
        self.askButton.connect("clicked(bool)", self.onAsk)
        self.questionEdit.connect("textChanged()", self.updateButtons)
        self.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.updateButtons()

    def updateButtons(self, *_):
        ready = bool(self.modelCombo.currentText and self.volumeSelector.currentNode()
                     and self.questionEdit.toPlainText().strip())
        self.askButton.enabled = ready

    def onConnect(self):
        url = self.serverUrlEdit.text.strip()
        with slicer.util.tryWithErrorDisplay("Cannot connect to the CORE-Seg server.", waitCursor=True):
            models = CoreSegClient(url, timeout=10).reasoning_models()
            qt.QSettings().setValue(SETTINGS_SERVER_URL, url)
            self.modelCombo.clear()
            for model in models:
                self.modelCombo.addItem(model)
            self.statusLabel.text = f"{len(models)} reasoning model(s) on {url}" if models else \
                "The server has no reasoning model."
        self.updateButtons()

    def onAsk(self):
        volume = self.volumeSelector.currentNode()
        question = self.questionEdit.toPlainText().strip()
        sliceIndex = None if self.allSlicesCheck.checked else self.logic.currentSliceIndex(volume)
        self.askButton.enabled = False
        self.statusLabel.text = "Waiting for the server..."
        try:
            with slicer.util.tryWithErrorDisplay("CORE-Seg could not answer.", waitCursor=True):
                result = self.logic.ask(self.serverUrlEdit.text.strip(), self.modelCombo.currentText, volume,
                                        question, sliceIndex=sliceIndex, allSlices=self.allSlicesCheck.checked)
                self.reasoningView.setPlainText(result["report"])
                self.statusLabel.text = f"Segment '{result['segmentName']}' added."
        finally:
            self.updateButtons()
            if self.statusLabel.text.startswith("Waiting"):
                self.statusLabel.text = ""


class CoreSegLogic(ScriptedLoadableModuleLogic):
    """Sends a volume and a question, turns the answer into a segment with its reasoning."""

    def currentSliceIndex(self, volumeNode, viewName="Red"):
        """Index (k, the third voxel axis) of the slice the given slice view shows, for ``volumeNode``."""
        sliceNode = slicer.app.layoutManager().sliceWidget(viewName).mrmlSliceNode()
        ras = [sliceNode.GetSliceToRAS().GetElement(i, 3) for i in range(3)] + [1.0]
        rasToIjk = vtk.vtkMatrix4x4()
        volumeNode.GetRASToIJKMatrix(rasToIjk)
        k = int(round(rasToIjk.MultiplyPoint(ras)[2]))
        return max(0, min(k, volumeNode.GetImageData().GetDimensions()[2] - 1))

    def ask(self, serverUrl, model, volumeNode, question, sliceIndex=None, allSlices=False, segmentationNode=None):
        """Ask the server; add the answer as a segment; return the params, the report and the segment name."""
        folder = tempfile.mkdtemp(prefix="CoreSeg_")
        try:
            imagePath = os.path.join(folder, "image.nrrd")
            if not slicer.util.saveNode(volumeNode, imagePath):
                raise RuntimeError(f"Could not save {volumeNode.GetName()} for upload.")
            is3D = volumeNode.GetImageData().GetDimensions()[2] > 1
            request = {"all_slices": True} if (is3D and allSlices) else {}
            if is3D and not allSlices:
                request["slice_index"] = int(sliceIndex or 0)
            client = CoreSegClient(serverUrl)
            result = runInBackground(lambda: client.infer(
                model, question, image_file=imagePath, result_extension=".nrrd", output_dir=folder, **request))
            name = segment_name(question, result.params)
            report = reasoning_report(result.params)
            segmentationNode = segmentationNode or self._segmentationNode(volumeNode)
            if result.label_path is not None:
                self.importLabel(str(result.label_path), volumeNode, segmentationNode, name, report, question)
            self._storeReport(segmentationNode, report)
            return {"params": result.params, "report": report, "segmentName": name,
                    "segmentationNode": segmentationNode}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _segmentationNode(volumeNode):
        name = f"{volumeNode.GetName()} CORE-Seg"
        node = slicer.mrmlScene.GetFirstNodeByName(name)
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        return node

    @staticmethod
    def importLabel(labelPath, volumeNode, segmentationNode, name, report, question):
        """Import a label file (values 0/1) as one new segment carrying the reasoning and the question as tags."""
        labelNode = slicer.util.loadLabelVolume(labelPath)
        try:
            segmentation = segmentationNode.GetSegmentation()
            before = segmentation.GetNumberOfSegments()
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
            if segmentation.GetNumberOfSegments() == before:  # an empty mask adds no segment: add an empty one
                segmentation.AddEmptySegment("", name)
            segment = segmentation.GetNthSegment(segmentation.GetNumberOfSegments() - 1)
            segment.SetName(name)
            segment.SetTag(REASONING_TAG, report)
            segment.SetTag(QUESTION_TAG, question)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)

    @staticmethod
    def _storeReport(segmentationNode, report):
        """Keep the latest reasoning in a text node referenced by the segmentation (saved with the scene)."""
        textNode = segmentationNode.GetNodeReference("CoreSegReasoning")
        if textNode is None:
            textNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTextNode",
                                                          f"{segmentationNode.GetName()} reasoning")
            segmentationNode.SetNodeReferenceID("CoreSegReasoning", textNode.GetID())
        textNode.SetText(report)


def runInBackground(function, pollSeconds=0.05):
    """Run ``function`` in a worker thread while the main thread keeps Slicer responsive; return its result.

    Only the HTTP call runs in the worker: every MRML and Qt change stays on the main thread.
    """
    outcome = {}
    done = threading.Event()

    def worker():
        try:
            outcome["result"] = function()
        except BaseException as error:  # re-raised on the main thread
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=worker, daemon=True).start()
    while not done.wait(pollSeconds):
        slicer.app.processEvents()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class CoreSegTest(ScriptedLoadableModuleTest):
    """Slicer self-test: the helpers always; a real round trip when ``CORESEG_TEST_SERVER_URL`` names a server."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_helpers()
        self.setUp()
        self.test_round_trip_with_a_server()

    def test_helpers(self):
        params = {"question": "Where is the tumor?", "reasoning": "A bright region.", "answer": "Here.",
                  "boxes": [[1, 2, 3, 4]], "format_valid": True, "no_lesion": False}
        self.assertEqual(segment_name("Where is  the tumor?", params), "Where is the tumor?")
        self.assertIn("Reasoning: A bright region.", reasoning_report(params))
        self.assertIn("[1, 2, 3, 4]", reasoning_report(params))
        self.assertTrue(segment_name("q", {**params, "format_valid": False}).endswith("(invalid answer)"))
        self.delayDisplay("Helpers OK")

    def test_round_trip_with_a_server(self):
        url = os.environ.get(TEST_SERVER_ENV)
        if not url:
            self.delayDisplay(f"Skipping the server round trip: set {TEST_SERVER_ENV} to a CORE-Seg server URL.")
            return
        import numpy as np

        # a bright disc on a dark background, 4 slices: nothing is downloaded
        rows, columns = np.mgrid[:128, :128]
        plane = np.where((rows - 64) ** 2 + (columns - 70) ** 2 < 15 ** 2, 200, 20).astype(np.uint8)
        volume = slicer.util.addVolumeFromArray(np.stack([plane] * 4), name="CoreSegTestVolume")
        logic = CoreSegLogic()
        model = CoreSegClient(url).reasoning_models()[0]
        result = logic.ask(url, model, volume, "Where is the lesion?", sliceIndex=2)
        segmentation = result["segmentationNode"].GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        segment = segmentation.GetNthSegment(0)
        self.assertEqual(segment.GetName(), result["segmentName"])
        tag = vtk.mutable("")
        self.assertTrue(segment.GetTag(REASONING_TAG, tag))
        self.assertIn("Question: Where is the lesion?", str(tag))
        self.delayDisplay("Round trip OK")

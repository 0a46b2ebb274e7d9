# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest

import scripts.data


def test_public_names_resolve_lazily_to_their_modules():
    from scripts.data.collate import CoreSegCollator
    from scripts.data.prompts import parse_completion

    assert scripts.data.CoreSegCollator is CoreSegCollator and scripts.data.parse_completion is parse_completion
    assert all(getattr(scripts.data, name) is not None for name in scripts.data.__all__)
    assert set(scripts.data.__all__) <= set(dir(scripts.data))


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        scripts.data.nothing  # noqa: B018

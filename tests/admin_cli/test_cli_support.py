"""The one JSON path of banditctl: strict JSON, whatever the value holds."""

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from banditd.admin_cli.cli_support import json_text, to_jsonable


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan"),
                                   np.float32("inf")])
def test_non_finite_numbers_become_null(value):
    assert to_jsonable({"x": [value]}) == {"x": [None]}


def test_numpy_scalars_datetimes_and_result_objects_become_plain_json():
    class Result:
        def to_dict(self):
            return {"n": np.int64(3), "mean": np.float64(0.5), "at": datetime(2026, 1, 2,
                                                                               tzinfo=UTC)}

    assert json.loads(json_text([Result(), (1, True, None)])) == [
        {"n": 3, "mean": 0.5, "at": "2026-01-02T00:00:00+00:00"}, [1, True, None]]


def test_the_text_has_no_token_a_strict_parser_refuses():
    def refuse(token):
        raise ValueError(token)

    text = json_text({"a": math.inf, "b": [math.nan, -math.inf]})
    assert json.loads(text, parse_constant=refuse) == {"a": None, "b": [None, None]}

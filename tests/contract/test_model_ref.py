"""Which stages take `--model` (`contract.model_ref.check_model_stage`): the one rule every verb
applies, and its one line."""

from __future__ import annotations

import pytest

from kubetune.contract import names as kn
from kubetune.contract.errors import SpecError
from kubetune.contract.model_ref import check_model_stage


@pytest.mark.parametrize("stage", [kn.STAGE_EVALUATE, kn.STAGE_PREDICT])
def test_the_stages_that_use_another_model_take_it(stage):
    check_model_stage(stage, "v0001")


@pytest.mark.parametrize("stage", [kn.STAGE_TRAIN, kn.STAGE_ALL])
def test_a_stage_that_trains_refuses_it_in_one_line(stage):
    with pytest.raises(SpecError) as raised:
        check_model_stage(stage, "current")
    assert str(raised.value) == (f"--model belongs to --stage evaluate or predict, not {stage} "
                                 "(training makes its own model)")


@pytest.mark.parametrize("stage", [*kn.RENDER_STAGES, "anything"])
def test_without_model_every_stage_passes(stage):
    check_model_stage(stage, None)

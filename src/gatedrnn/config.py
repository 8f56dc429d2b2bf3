"""What defines a training run: `TrainConfig`, each of its fields tagged with its roles (utils.role), and the
sets of fields derived from the tags. Torch-free (the unit names are gatedrnn.units'; a unit's declaration,
and with it torch, is read only to check an option a config gives), so a study can name, key and compare
runs without the training code; gatedrnn.train re-exports every name here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .units import canonical_unit, unit_names
from .utils import fields_with, role

UNIT_NAMES = tuple(unit_names())   # the paper's three units, the ablation variants, the minimal units
# The fields that are options of a unit: each unit's declaration says which it takes (gatedrnn.nn.Declaration).
# A field at its default passes nothing, so the unit keeps its own default (lstm-fb1: forget_bias 1);
# another value reaches the unit, or, if the unit does not take that option, is refused with the config.
UNIT_OPTIONS = ("peepholes", "reset_after", "forget_bias")


# The roles of TrainConfig's fields, each tagged on the field (`**role(...)`, utils.role); the sets of fields
# the code works with are derived from them (below the class: NOT_COMPUTED, SHARED; study/grid.py: NOT_IN_ID,
# NOT_SHARED, TRAIN_FIELDS). A field without a role is a study-wide setting of how each model is trained.
TRAIN_ROLES = {
    "data": "which data a run reads: models trained together share it",
    "architecture": "the model that is built: models trained together share it; a study keeps it at the "
                    "paper's (Table 1's sizes)",
    "placement": "where a run happens (its data folder, its device): models trained together share it; it does "
                 "not change what the run computes",
    "recording": "how often a learning curve is recorded: evaluation draws no random numbers and changes no "
                 "weights, so it does not change what the run computes",
    "per_run": "set on each run by a study itself (the grid's axes, the study's data folder), not study-wide",
}


def same_run(saved: dict, cfg_json: dict) -> bool:
    """Does a saved config describe the run cfg_json? Both are compared through the current TrainConfig
    (so a field added later with its default matches an older file) and without NOT_COMPUTED fields."""
    try:
        saved = TrainConfig(**saved).model_dump()
    except Exception:  # noqa: BLE001 — an unreadable or foreign config is simply not this run
        return False
    strip = lambda d: {k: v for k, v in d.items() if k not in NOT_COMPUTED}
    return strip(saved) == strip(cfg_json)


class TrainConfig(BaseModel):
    """Everything that defines a run. Defaults follow the paper where it speaks; where it is silent
    the choice is ours and documented in docs/UNITS.md ("Training protocol")."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what
    dataset: str = Field("jsb", **role("data", "per_run"),
                         description="dataset: jsb | nottingham | musedata | piano (music), fsdd-a | fsdd-b (speech), "
                                     "wav:FOLDER (your recordings), midi:FOLDER (your MIDI files)")
    unit: str = Field("gru", **role("architecture", "per_run"),
                      description="recurrent unit: the paper's tanh, gru, lstm, an ablation variant, mingru, minlstm "
                                  "(docs/VARIANTS.md), or package.module:ClassName, a torch.nn.Module of your own "
                                  "(docs/UNITS.md)")
    hidden_size: int | None = Field(None, gt=0, **role("architecture"),
                                    description="hidden units; none = Table 1's size for the task (music 100/46/36, "
                                                "speech 400/227/195 for tanh/GRU/LSTM)")
    budget: int | None = Field(None, gt=0, **role("architecture"),
                               description="match the hidden size to this many recurrent parameters, counted as "
                                           "Table 1 counts them (at the nominal input size: music 100, speech 20)")
    peepholes: bool = Field(True, **role("architecture"),
                            description="LSTM: diagonal peepholes v_i, v_f, v_o (the paper's form)")
    reset_after: bool = Field(False, **role("architecture"),
                              description="GRU: Cho et al.'s r ⊙ (U h) instead of the paper's U (r ⊙ h)")
    forget_bias: float = Field(0.0, allow_inf_nan=False, **role("architecture"),
                               description="LSTM family: initial forget-gate bias b_f (0: the unit's own, "
                                           "lstm-fb1's 1)")
    # how
    optimizer: Literal["rmsprop", "rmsprop-momentum"] = Field(
        "rmsprop", description="plain RMSProp, or the authors' released variant (momentum, rms floor, "
                               "update-norm clip)")
    lr: float = Field(3e-3, gt=0, lt=1, allow_inf_nan=False, **role("per_run"), description="learning rate")
    rms_decay: float = Field(0.95, gt=0, lt=1, allow_inf_nan=False,
                             description="decay of the squared-gradient average (released code: 0.95)")
    momentum: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False, description="rmsprop-momentum only")
    rms_floor: float = Field(0.01, gt=0, allow_inf_nan=False,
                             description="rmsprop-momentum only: the rms is floored at this")
    lr_final: float = Field(1.0, gt=0, le=1, allow_inf_nan=False,
                            description="decay lr linearly to lr*this by epoch lr_decay_epochs (1: no decay; "
                                        "released code: 0.01)")
    lr_decay_epochs: int = Field(500, gt=0, description="epochs of the linear decay")
    weight_noise: float = Field(0.075, ge=0, allow_inf_nan=False,
                                description="std of the additive Gaussian weight noise on W and U (paper: 0.075)")
    clip_norm: float = Field(1.0, gt=0, allow_inf_nan=False,
                             description="rescale the gradient to this norm when above it")
    # 0 = the strict protocol: the first non-finite loss or gradient ends the run as "diverged".
    # N > 0: skip such an update (no step, as mixed-precision loss scaling does), count it, and declare
    # the run diverged only after N of them. Counted in metrics.jsonl and result.json.
    skip_nonfinite: int = Field(0, ge=0, description="skip up to N updates with a non-finite loss or gradient "
                                "(counted); 0: the strict protocol, the first one ends the run as diverged")
    tbptt: int | None = Field(None, gt=1, description="truncated back-propagation: no gradient further back "
                              "than N steps (state carried, one update per batch); none: full sequences "
                              "(the paper)")
    batch_size: int = Field(16, gt=0, description="sequences per update")
    eval_batch_size: int = Field(64, gt=0, description="sequences per evaluation batch")
    # The training split's NLL after every epoch is only a learning curve (early stopping and halving read
    # the validation split; Table 2's train NLL is the best model's, computed at the end): a fifth of an
    # epoch's cost that a cheap search (--search halving) may spend less often.
    # (A non-finite training-split NLL, which ends a run as diverged, is then seen only at the epochs it is
    # evaluated; the updates' own finiteness check and the validation NLL still see every epoch.)
    eval_train_every: int = Field(1, gt=0, **role("recording"),
                                  description="evaluate the training split after every N-th epoch (and before "
                                              "training); the validation split after every epoch (a --search "
                                              "halving study: 10 unless given)")
    epochs: int = Field(500, ge=0, description="maximum epochs")
    # 0: the released code's rule — every epoch up to `epochs` runs, the best-validation model is kept
    patience: int = Field(20, ge=0, description="early stopping: epochs without a better validation NLL (0: no "
                          "early stopping; the best-validation model of all epochs is kept)")
    seed: int = Field(0, ge=0, **role("per_run"), description="seed of the initialisation, batch order and "
                                                              "weight noise")
    # data
    data_dir: str | None = Field(None, **role("placement", "per_run"),
                                 description="folder holding the data files (else env GATEDRNN_DATA_DIR, else the "
                                             "download cache)")
    data_format: Literal["auto", "mat", "pickle"] = Field(
        "auto", **role("data"), description="music: the .mat files or the original pickles")
    width: Literal["88", "paper"] = Field("88", **role("data"),
                                          description="music: 88 piano keys, or the paper's width")
    limit_sequences: int | None = Field(None, gt=0, **role("data"),
                                        description="use only N sequences of each split (which ones: --subset)")
    subset: Literal["first", "spread"] = Field(
        "spread", **role("data"), description="with --limit-sequences: N sequences spread evenly over each split (a "
        "split stored by speaker or piece keeps every one), or the first N (FSDD's first 1,200 fsdd-a training "
        "sequences are all one speaker's)")
    crop_length: int | None = Field(None, gt=1, **role("data"), description="crop every sequence to at most N steps")
    device: str = Field("auto", **role("placement"), description="auto | cpu | cuda | cuda:N")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from .data import DataError, canonical_name
        try:
            return canonical_name(v)
        except DataError as e:  # pydantic reports ValueErrors as field errors
            raise ValueError(str(e)) from None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto":
            import torch   # (only to read a device other than "auto")
            try:
                torch.device(v)
            except RuntimeError as e:
                raise ValueError(f"not a torch device: {v!r}") from e
        return v

    @model_validator(mode="before")
    @classmethod
    def _subset_needs_a_limit(cls, v):
        # Without --limit-sequences there is nothing to choose: recorded as "first", as every run was before
        # "spread" became the default (2026-12-03), so their run ids stay what they were.
        if isinstance(v, dict) and v.get("limit_sequences") is None:
            v = {**v, "subset": "first"}
        return v

    @field_validator("unit", mode="before")
    @classmethod
    def _known_unit(cls, v):
        """A unit name (recorded in lower case) or an import path (its form only: a config never imports)."""
        return canonical_unit(v)

    @field_validator("unit", *UNIT_OPTIONS)
    @classmethod
    def _options_the_unit_takes(cls, v, info: ValidationInfo):
        """An option the unit does not take (its declaration says which) is refused here, before anything
        trains; the error names the field and the unit. (Fields are validated in order, unit first; on
        assignment `info.data` holds all the others.)"""
        values = {**info.data, info.field_name: v}
        given = given_options(values)
        if "unit" in values and given:   # (every unit takes its own defaults: only a given option can be refused)
            from .nn import unit_options   # the unit's declaration: torch, only for a config that gives an option
            unit_options(values["unit"], **given)   # OptionError is a ValueError
        return v

    @model_validator(mode="after")
    def _one_size(self):
        if self.hidden_size is not None and self.budget is not None:
            raise ValueError("give hidden_size or budget, not both")
        return self


# Fields that do not change what a run computes: where the data lives, which device runs it, how often the
# training split's NLL is recorded (same_run compares configs without them; a run's id leaves them out)
NOT_COMPUTED = fields_with(TrainConfig, "placement", "recording")
# What models trained together must share: the data they read, the architecture whose recurrences are
# stacked, the device. Everything else (lr, seed, weight noise, optimiser, clipping, skipping, tbptt, batch
# size, patience, epochs, ...) is each model's own.
SHARED = fields_with(TrainConfig, "data", "architecture", "placement")


def given_options(cfg: TrainConfig | dict) -> dict:
    """The unit options a config gives (UNIT_OPTIONS not at their field's default)."""
    d = cfg if isinstance(cfg, dict) else {k: getattr(cfg, k) for k in UNIT_OPTIONS}
    return {k: d[k] for k in UNIT_OPTIONS if k in d and d[k] != TrainConfig.model_fields[k].default}

"""The settings layer checks every value and rule once (issue 18, finding 2).

Each case below was re-checked by a stage (polar, denoise, ingest, encode, measure, montage,
validate) with its own error type before; the config layer now refuses it with a
:class:`ConfigError` whose sentence names the setting and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from skymorph.config import (
    PRESETS,
    Config,
    ConfigError,
    DenoiseConfig,
    EncodeConfig,
    IngestConfig,
    PolarConfig,
    all_settings,
    load_config,
    section_settings,
)

BAD_VALUES = [
    # section, key, value, what the message must say
    ("ingest", "psf_size", 40, r"ingest.psf_size = 40 is even: give an odd size"),
    ("denoise", "learning_rate", 0, r"denoise.learning_rate = 0 is not allowed: .*in \(0, inf\]"),
    ("denoise", "learning_rate", -1e-3, r"denoise.learning_rate = -0.001 is not allowed"),
    ("denoise", "validation_fraction", 1.0,
     r"denoise.validation_fraction = 1.0 is not allowed: .*\[0, 0.9\]"),
    ("denoise", "epochs", 0, r"denoise.epochs = 0 is not allowed: .*\[1, inf\]"),
    ("denoise", "patience", 0, r"denoise.patience = 0 is not allowed"),
    ("denoise", "train_sample", 0, r"denoise.train_sample = 0 is not allowed"),
    ("denoise", "batch_size", 0, r"denoise.batch_size = 0 is not allowed"),
    ("denoise", "inference_batch_size", 0, r"denoise.inference_batch_size = 0 is not allowed"),
    ("denoise", "kernel_size", 4, r"denoise.kernel_size = 4 is even: give an odd size"),
    ("polar", "angle_step", 0, r"polar.angle_step = 0 is not allowed"),
    ("polar", "angle_step", 4.0, r"polar.angle_step = 4.0 is not allowed: .*\[0.001, 3.14\]"),
    ("polar", "max_radius", 0, r"polar.max_radius = 0 is not allowed: .*in \(0, inf\]"),
    ("polar", "n_rays", 0, r"polar.n_rays = 0 is not allowed"),
    ("polar", "n_radii", 0, r"polar.n_radii = 0 is not allowed"),
    ("polar", "pole", "dimmest", r"polar.pole = 'dimmest' is not allowed: .*'brightest'"),
    ("polar", "batch_size", 0, r"polar.batch_size = 0 is not allowed"),
    ("encode", "percentiles", [50, 10], r"encode.percentiles = \[50.0, 10.0\]: give two numbers, low < high"),
    ("encode", "percentiles", [1, 2, 3], r"encode.percentiles = .*: give two numbers"),
    ("encode", "percentiles", [-1, 99], r"encode.percentiles = \[-1, 99\] is not allowed: .*\[0, 100\]"),
    ("encode", "input_size", 16, r"encode.input_size = 16: give 0 \(the model's own\) or at least 32 px"),
    ("encode", "rotations", 3, r"encode.rotations = 3 is not allowed: .*one of 1, 2, 4"),
    ("encode", "runtime", "tensorrt", r"encode.runtime = 'tensorrt' is not allowed"),
    ("encode", "scaling", "log", r"encode.scaling = 'log' is not allowed"),
    ("encode", "aspect", "crop", r"encode.aspect = 'crop' is not allowed"),
    ("encode", "precision", "int8", r"encode.precision = 'int8' is not allowed"),
    ("encode", "threads", -1, r"encode.threads = -1 is not allowed"),
    ("encode", "batch_size", 0, r"encode.batch_size = 0 is not allowed"),
    ("encode", "chunk_size", 0, r"encode.chunk_size = 0 is not allowed"),
    ("measure", "gain", 0, r"measure.gain = 0 is not allowed: .*in \(0, inf\]"),
    ("measure", "chunk_size", 0, r"measure.chunk_size = 0 is not allowed"),
    ("inspect", "stretch", "log", r"inspect.stretch = 'log' is not allowed: .*'asinh'"),
]


@pytest.mark.parametrize(("section", "key", "value", "match"), BAD_VALUES,
                         ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD_VALUES])
def test_the_config_layer_refuses_the_bad_value(section, key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config().update({section: {key: value}})


def test_a_rule_between_two_settings_of_a_section():
    with pytest.raises(ConfigError, match="encode.weights and encode.random_init exclude each other"):
        Config().update({"encode": {"weights": "w.pth", "random_init": True}})
    assert Config().update({"encode": {"weights": "w.pth"}}).encode.weights == "w.pth"


@pytest.mark.parametrize(("make", "match"), [
    (lambda: EncodeConfig(input_size=16), "encode.input_size = 16"),
    (lambda: IngestConfig(psf_size=10), "ingest.psf_size = 10 is even"),
    (lambda: PolarConfig(pole="dimmest"), "polar.pole = 'dimmest'"),
    (lambda: dataclasses.replace(DenoiseConfig(), learning_rate=0.0), "denoise.learning_rate = 0.0"),
], ids=["constructor-rule", "constructor-rule-ingest", "constructor-choice", "replace"])
def test_a_section_made_in_code_is_checked_too(make, match):
    # core functions take sections built in code (notebooks, stages' own replace()): same checks
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize(("etg", "match"), [
    (["ELL"], r"validate.etg_types = \['ELL'\]: ELL not in inspect.types"),
    ([], r"validate.etg_types is empty: name at least one early type"),
    (["SPH", "ETD", "LTD", "IRR"], r"leaves no late type .*the last type, UNC, is the unclassified one"),
])
def test_a_rule_across_sections_is_checked_for_the_stage_that_needs_it(etg, match):
    config = Config().update({"validate": {"etg_types": etg}})
    config.check("cluster", "inspect")  # other stages are not held up by the validation's rule
    with pytest.raises(ConfigError, match=match):
        config.check("validate")


def test_the_nuisance_projection_needs_the_encoder_to_read_the_stamps():
    config = Config().update({"reduce": {"projection": "nuisance"}, "polar": {"enabled": True}})
    config.check("polar", "encode")
    with pytest.raises(ConfigError, match="reduce.projection = nuisance copies the stamps .* switch denoise"):
        config.check("reduce")
    Config().update({"reduce": {"projection": "nuisance"}}).check("reduce")


def test_the_presets_and_a_good_cross_section_setting_pass():
    for preset in PRESETS:
        load_config(preset=preset).check(*Config.__dataclass_fields__)
    config = Config().update({"inspect": {"types": ["E", "S0", "SP", "UNC"]},
                              "validate": {"etg_types": ["E", "S0"]}})
    config.check("validate")


def test_open_interval_in_words_and_an_accepted_edge():
    spec = section_settings("denoise")["learning_rate"]
    assert spec.describe() == "a number; in (0, inf]"
    assert section_settings("denoise")["validation_fraction"].describe() == "a number; in [0, 0.9]"
    assert Config().update({"denoise": {"learning_rate": 1e-12}}).denoise.learning_rate == 1e-12


def test_every_setting_has_a_short_help_without_lab_notes():
    for spec in all_settings():
        assert spec.help.strip(), f"{spec.key} has no help text"
        note = re.search(r"measured (on|in)|GZ1|COSMOS|README|faster than", spec.help)
        assert note is None, f"{spec.key}: lab notes ({note[0]!r}) belong in docs/configuration.md"
        assert len(spec.help) <= 500, f"{spec.key}: help of {len(spec.help)} characters"

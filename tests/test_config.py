import dataclasses

import pytest

from plus.config import PROFILES, Profile, config_hash, get_profile


def test_every_profile_is_valid_and_named_after_its_key():
    for name, profile in PROFILES.items():
        assert profile.name == name


def test_unknown_profile_error_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'laptop'.*\['cpu', 'gpu', 'smoke'\]"):
        get_profile("laptop")


def test_invalid_field_fails_with_the_offending_value():
    with pytest.raises(ValueError, match=r"Profile.batch_size must be a positive int, got 0"):
        dataclasses.replace(get_profile("smoke"), batch_size=0)
    with pytest.raises(ValueError, match=r"Profile.reward_model"):
        dataclasses.replace(get_profile("smoke"), reward_model=" ")


def test_profiles_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_profile("cpu").batch_size = 3  # type: ignore[misc]


def test_config_hash_is_stable_and_sensitive():
    cpu = get_profile("cpu")
    assert config_hash(cpu) == config_hash(dataclasses.replace(cpu))
    assert config_hash(cpu) != config_hash(dataclasses.replace(cpu, num_seeds=1))
    assert isinstance(cpu, Profile)

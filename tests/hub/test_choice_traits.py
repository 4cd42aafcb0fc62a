"""Fixed-choice settings: an unknown value stops the hub with what to write instead."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from hub_ext.secrets.broker import SecretBroker
from hub_ext.spawner import SpawnPolicy
from hub_ext.traits import ChoiceError


@pytest.mark.parametrize(("cls", "trait", "bad", "hint"), [
    (SpawnPolicy, "host_firewall", "iptables", "use 'nftables'"),
    (SecretBroker, "backend", "s3", "use 'embedded'"),
])
def test_an_unknown_choice_is_refused_with_a_hint(cls, trait, bad, hint):
    c = Config()
    setattr(getattr(c, cls.__name__), trait, bad)
    with pytest.raises(ValueError, match=f"{cls.__name__}.{trait}='{bad}': {hint}") as e:
        cls(config=c)
    assert isinstance(e.value, ChoiceError)
    # the values are listed where admins look them up
    assert "Choices: any of ['nftables', 'off']" in SpawnPolicy.class_get_help()
    assert "Choices: any of ['embedded', 'vault']" in SecretBroker.class_get_help()

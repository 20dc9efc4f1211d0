"""Profile files: `$CODEX_HOME/NAME.config.toml` laid over config.toml, the legacy
`[profiles.NAME]` table when there is none, and the store's snapshots of named profiles."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from codexctl.results import ConfigLayer, ConfigRejected, ConfigReloaded
from codexd.config.load import (
    ConfigError,
    ProfileNotFound,
    load_config,
    load_file,
    profile_of,
)
from codexd.config.schema import ConfigSnapshot
from codexd.config.store import MAX_PROFILE_REFUSALS, MAX_PROFILE_SNAPSHOTS, ConfigStore
from codexd.config.watch import is_config_file

NO_ENV: dict[str, str] = {}

BASE = """\
model = "gpt-5"
model_reasoning_effort = "high"

[model_providers.fake]
name = "Fake"
base_url = "http://127.0.0.1:9/v1"
env_key = "FAKE_KEY"
request_max_retries = 2

[profiles.quick]
model = "gpt-5-mini"
"""

WORK = """\
model = "gpt-4.1"
model_provider = "corp"

[model_providers.corp]
base_url = "https://llm.example.com/v1"
env_key = "CORP_KEY"

[model_providers.fake]
stream_max_retries = 9
"""


def home_with(tmp_path: Path, config: str, **profiles: str) -> Path:
    (tmp_path / "config.toml").write_text(config)
    for name, text in profiles.items():
        (tmp_path / f"{name}.config.toml").write_text(text)
    return tmp_path


# --------------------------------------------------------------------------- layering


def test_a_profile_file_sets_model_and_provider_and_defines_the_provider(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "work"\n' + BASE, work=WORK)
    snap = load_config(str(home), NO_ENV)
    assert (snap.profile, snap.model, snap.model_provider) == ("work", "gpt-4.1", "corp")
    assert snap.provider.base_url == "https://llm.example.com/v1"
    assert snap.route("corp", chatgpt_auth=False).provider.env_key == "CORP_KEY"
    # What the profile leaves out stays config.toml's.
    assert snap.model_reasoning_effort == "high"
    assert snap.layers == (
        ConfigLayer(path=str(home / "config.toml"), kind="config"),
        ConfigLayer(path=str(home / "work.config.toml"), kind="profile", profile="work"),
    )


def test_tables_merge_key_by_key_and_the_profile_wins(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, work=WORK)
    fake = load_config(str(home), NO_ENV, profile="work").providers["fake"]
    # config.toml's keys of [model_providers.fake] stay, the profile's are added.
    assert (fake.name, fake.base_url, fake.request_max_retries) == (
        "Fake",
        "http://127.0.0.1:9/v1",
        2,
    )
    assert fake.stream_max_retries == 9


def test_without_a_file_the_legacy_table_is_the_profile(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "quick"\n' + BASE)
    snap = load_config(str(home), NO_ENV)
    assert (snap.profile, snap.model, snap.model_provider) == ("quick", "gpt-5-mini", "openai")
    assert snap.layers[-1] == ConfigLayer(
        path=str(home / "config.toml"), kind="legacy_profile", profile="quick"
    )


def test_a_file_wins_over_a_legacy_table_of_the_same_name(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "quick"\n' + BASE, quick='model = "gpt-4o"\n')
    snap = load_config(str(home), NO_ENV)
    assert snap.model == "gpt-4o"
    assert snap.layers[-1].kind == "profile"


def test_a_requested_profile_replaces_the_one_of_the_key(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "quick"\n' + BASE, work=WORK)
    snap = load_config(str(home), NO_ENV, profile="work")
    assert (snap.profile, snap.model) == ("work", "gpt-4.1")
    assert [layer.kind for layer in snap.layers] == ["config", "profile"]


def test_an_undefined_profile_key_is_located_and_names_the_file(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'model = "x"\nprofile = "fast"\n', work=WORK)
    with pytest.raises(ConfigError) as info:
        load_config(str(home), NO_ENV)
    err = info.value
    assert (err.file, err.line, err.key) == (str(home / "config.toml"), 2, "profile")
    assert str(home / "fast.config.toml") in err.message
    assert "[profiles.fast]" in err.message
    assert "known: work" in err.message


def test_an_unknown_requested_profile_names_the_file_and_the_table(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, work=WORK)
    with pytest.raises(ProfileNotFound) as info:
        load_config(str(home), NO_ENV, profile="nope")
    assert info.value.problem == "unknown profile 'nope'"
    assert str(home / "nope.config.toml") in info.value.hint
    assert "no [profiles.nope] table in config.toml" in info.value.hint
    assert info.value.known == ("quick", "work")


def test_the_known_profiles_an_error_lists_are_bounded(tmp_path: Path) -> None:
    names = [f"p{n:02}" for n in range(25)]
    home = home_with(tmp_path, BASE, **{n: "" for n in names})
    with pytest.raises(ProfileNotFound) as info:
        load_config(str(home), NO_ENV, profile="nope")
    shown = ", ".join(names[:20])  # and "quick", the legacy table, sorted last
    assert info.value.hint.endswith(f"known: {shown} and 6 more)")


@pytest.mark.parametrize("name", ["../config", "a/b", "", "work.config"])
def test_a_name_that_is_not_plain_never_reads_a_file(tmp_path: Path, name: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(BASE)
    (tmp_path / "config.config.toml").write_text('model = "outside"\n')
    with pytest.raises(ProfileNotFound) as info:
        load_config(str(home), NO_ENV, profile=name)
    assert info.value.path is None
    assert "not a plain name" in info.value.hint


def test_a_bad_key_in_a_profile_file_is_located_in_that_file(tmp_path: Path) -> None:
    home = home_with(
        tmp_path,
        'profile = "work"\n' + BASE,
        work='model = "gpt-4.1"\n\n[model_providers.fake]\nrequest_max_retries = "x"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(home), NO_ENV)
    err = info.value
    assert (err.file, err.line, err.key) == (
        str(home / "work.config.toml"),
        4,
        "model_providers.fake.request_max_retries",
    )
    assert err.message == (
        'work.config.toml:4: model_providers.fake.request_max_retries: expected an integer '
        '≤ 100, got "x"'
    )


def test_an_unknown_provider_chosen_by_a_profile_file_is_located_there(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, work='\nmodel_provider = "azur"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(home), NO_ENV, profile="work")
    assert (info.value.file, info.value.line) == (str(home / "work.config.toml"), 2)
    assert 'unknown provider "azur"' in info.value.message


def test_a_profile_file_cannot_select_a_profile(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, work='model = "a"\nprofile = "quick"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(home), NO_ENV, profile="work")
    assert info.value.message.startswith("work.config.toml:2: profile: a profile file cannot")


def test_config_check_of_a_profile_file_lays_it_over_config_toml(tmp_path: Path) -> None:
    # `model_provider = "fake"` is valid only with config.toml's [model_providers.fake].
    home = home_with(tmp_path, BASE, work='model_provider = "fake"\n')
    snap = load_file(str(home / "work.config.toml"), NO_ENV)
    assert (snap.profile, snap.model_provider, snap.model) == ("work", "fake", "gpt-5")


def test_which_file_names_are_profiles_and_watched() -> None:
    assert profile_of("work.config.toml") == "work"
    assert profile_of("config.toml") is None
    assert profile_of("a b.config.toml") is None
    assert all(map(is_config_file, ["config.toml", "codexd.toml", "my-p_1.config.toml"]))
    assert not any(map(is_config_file, ["auth.json", ".work.config.toml.swp", "x.toml"]))


# --------------------------------------------------------------------------- the store


def open_store(home: Path) -> tuple[ConfigStore, list[object]]:
    store = ConfigStore.open(str(home), NO_ENV)
    events: list[object] = []
    store.subscribe(events.append)
    return store, events


def test_a_named_profile_gets_its_snapshot_and_the_daemons_codexd(tmp_path: Path) -> None:
    home = home_with(
        tmp_path,
        BASE + "\n[codexd]\nmax_connections = 7\n",
        work=WORK + "\n[codexd]\nmax_connections = 3\n",
    )
    store, _ = open_store(home)
    work = store.for_profile("work")
    assert (work.profile, work.model, work.model_provider) == ("work", "gpt-4.1", "corp")
    assert work.codexd.max_connections == 7
    assert store.for_profile("work") is work  # cached
    legacy = store.for_profile("quick")
    assert (legacy.model, legacy.model_provider) == ("gpt-5-mini", "openai")
    with pytest.raises(ProfileNotFound):
        store.for_profile("nope")


def test_the_profile_in_force_is_the_snapshot_in_force(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "work"\n' + BASE, work=WORK)
    store, _ = open_store(home)
    assert store.for_profile("work") is store.snapshot
    assert store.cached_profiles == []


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    names = [f"p{n}" for n in range(MAX_PROFILE_SNAPSHOTS + 2)]
    home = home_with(tmp_path, BASE, **{n: f'model = "{n}"\n' for n in names})
    store, _ = open_store(home)
    for name in names:
        assert store.for_profile(name).model == name
    assert store.cached_profiles == names[-MAX_PROFILE_SNAPSHOTS:]


def test_a_reload_rebuilds_named_profiles(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, work=WORK)
    store, events = open_store(home)
    store.for_profile("work")
    (home / "work.config.toml").write_text(WORK.replace("gpt-4.1", "gpt-4o"))
    outcome = store.reload()
    assert (outcome.changed, outcome.error) == (True, None)
    assert store.for_profile("work").model == "gpt-4o"
    assert events == [ConfigReloaded(generation=2, path=str(home / "config.toml"))]


def test_an_invalid_named_profile_keeps_its_snapshot_and_does_not_fail_the_reload(
    tmp_path: Path,
) -> None:
    home = home_with(tmp_path, BASE, work=WORK)
    store, events = open_store(home)
    assert store.for_profile("work").model == "gpt-4.1"
    # One reload sees a new config.toml and a broken profile file that only requests name.
    (home / "config.toml").write_text(BASE.replace('"high"', '"low"'))
    (home / "work.config.toml").write_text("[codexd]\nmax_conections = 1\n")
    outcome = store.reload()
    assert (outcome.generation, outcome.changed, outcome.error) == (2, True, None)
    assert store.snapshot.model_reasoning_effort == "low"  # config.toml is in force
    assert store.for_profile("work").model == "gpt-4.1"  # the profile's old config stays
    assert store.error is not None and store.error.startswith("work.config.toml:2: codexd.")
    profile_file = str(home / "work.config.toml")
    assert events == [
        ConfigReloaded(generation=2, path=str(home / "config.toml")),
        ConfigRejected(path=profile_file, error=store.error),
    ]
    # Reported once: another reload with the same error says nothing new.
    assert store.reload() == type(outcome)(generation=2, changed=False)
    assert len(events) == 2 and store.error is not None
    (home / "work.config.toml").write_text(WORK.replace("gpt-4.1", "gpt-4o"))
    outcome = store.reload()
    assert (outcome.changed, outcome.error, store.error) == (True, None, None)
    assert store.for_profile("work").model == "gpt-4o"
    assert events[-1] == ConfigReloaded(generation=3, path=str(home / "config.toml"))


def test_an_invalid_profile_in_force_rejects_the_whole_reload(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "work"\n' + BASE, work=WORK)
    store, events = open_store(home)
    (home / "config.toml").write_text('profile = "work"\n' + BASE.replace('"high"', '"low"'))
    (home / "work.config.toml").write_text("[codexd]\nmax_conections = 1\n")
    outcome = store.reload()
    assert outcome.error is not None and outcome.error.file == str(home / "work.config.toml")
    assert (outcome.generation, outcome.changed) == (1, False)
    assert store.snapshot.model_reasoning_effort == "high"  # nothing of the new files applies
    assert store.error == outcome.error.message
    assert events == [ConfigRejected(path=str(home / "work.config.toml"), error=store.error)]


def counting_store(home: Path) -> tuple[ConfigStore, list[str]]:
    """A store whose profile reads are counted (each is a file read and maybe a listdir)."""
    reads: list[str] = []

    def profile_loader(name: str) -> ConfigSnapshot:
        reads.append(name)
        return load_config(str(home), NO_ENV, profile=name)

    return (
        ConfigStore(
            load_config(str(home), NO_ENV),
            lambda: load_config(str(home), NO_ENV),
            profile_loader=profile_loader,
        ),
        reads,
    )


def test_a_refused_profile_is_answered_from_memory_until_a_reload(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, bad="[codexd]\nmax_conections = 1\n")
    store, reads = counting_store(home)
    depths = []
    for _ in range(3):
        with pytest.raises(ProfileNotFound) as missing:
            store.for_profile("nope")
        assert str(home / "nope.config.toml") in str(missing.value)
        depths.append(len(traceback.extract_tb(missing.value.__traceback__)))
        with pytest.raises(ConfigError) as invalid:
            store.for_profile("bad")
        assert invalid.value.message.startswith("bad.config.toml:2: codexd.max_conections")
    assert reads == ["nope", "bad"]
    assert depths[1] == depths[2]  # a remembered error's traceback does not grow
    # A file created now is seen after the reload its watcher makes, not before.
    (home / "nope.config.toml").write_text('model = "gpt-4o"\n')
    with pytest.raises(ProfileNotFound):
        store.for_profile("nope")
    store.reload()
    assert store.for_profile("nope").model == "gpt-4o"
    assert reads == ["nope", "bad", "nope"]


def test_the_refused_names_are_bounded(tmp_path: Path) -> None:
    store, reads = counting_store(home_with(tmp_path, BASE))
    names = [f"n{n}" for n in range(MAX_PROFILE_REFUSALS + 1)]
    for name in [*names, names[-1], names[0]]:
        with pytest.raises(ProfileNotFound):
            store.for_profile(name)
    # The last one is remembered; the first was pushed out and is read again.
    assert reads == [*names, names[0]]


def test_a_deleted_named_profile_is_dropped(tmp_path: Path) -> None:
    home = home_with(tmp_path, BASE, work=WORK)
    store, _ = open_store(home)
    store.for_profile("work")
    (home / "work.config.toml").unlink()
    assert store.reload().changed
    assert store.cached_profiles == []
    with pytest.raises(ProfileNotFound):
        store.for_profile("work")


def test_the_profile_file_in_force_reloads_and_an_invalid_one_is_rejected(tmp_path: Path) -> None:
    home = home_with(tmp_path, 'profile = "work"\n' + BASE, work=WORK)
    store, events = open_store(home)
    (home / "work.config.toml").write_text(WORK.replace("gpt-4.1", "gpt-4o"))
    assert store.reload().changed
    assert store.snapshot.model == "gpt-4o"
    (home / "work.config.toml").write_text('model_provider = "azur"\n')
    outcome = store.reload()
    assert outcome.error is not None
    assert store.snapshot.model == "gpt-4o"  # the old config stays in force
    assert events[-1] == ConfigRejected(path=str(home / "work.config.toml"), error=store.error)
    # Deleted while in force (and no legacy table): config.toml's `profile` is at fault.
    (home / "work.config.toml").unlink()
    outcome = store.reload()
    assert outcome.error is not None and outcome.error.key == "profile"
    assert str(home / "work.config.toml") in outcome.error.message
    assert store.snapshot.model == "gpt-4o"

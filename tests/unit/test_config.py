"""Config loading: base + profile + environment, validated with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from ctlake.config import load_config
from ctlake.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write_conf(tmp_path: Path, base: str, **profiles: str) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir(parents=True)
    (conf / "base.yaml").write_text(base)
    for name, text in profiles.items():
        (conf / f"{name}.yaml").write_text(text)
    return conf


def test_shipped_profiles_load_and_differ():
    local = load_config("local", conf_dir=ROOT / "conf", environ={})
    test = load_config("test", conf_dir=ROOT / "conf", environ={})
    cluster = load_config("cluster", conf_dir=ROOT / "conf", environ={})
    assert local.spark.master == "local[*]"
    assert local.lake_root == str((ROOT / "lake").resolve())
    assert test.services.kafka.port != local.services.kafka.port
    assert test.kafka.bootstrap_servers.endswith(str(test.services.kafka.port))
    assert test.mlflow.tracking_uri.endswith(str(test.services.mlflow.port))
    assert test.elasticsearch.url.endswith(str(test.services.elasticsearch.http_port))
    assert cluster.lake_root.startswith("hdfs://")
    assert cluster.spark.local_ip is None
    assert cluster.spark.conf["spark.executor.cores"] == "4"
    assert cluster.table_path("silver.ct_series") == "hdfs://namenode.example.org:8020/ctlake/silver/ct_series"


def test_profile_wins_key_by_key(tmp_path):
    conf = write_conf(tmp_path, "spark:\n  master: local[*]\n  shuffle_partitions: 4\n",
                      p="spark:\n  shuffle_partitions: 9\n")
    cfg = load_config("p", conf_dir=conf, environ={})
    assert cfg.spark.shuffle_partitions == 9
    assert cfg.spark.master == "local[*]"  # kept from base
    assert cfg.kafka.topic == "ctlake.dicom"  # dataclass default


def test_environment_overrides_are_typed(tmp_path):
    conf = write_conf(tmp_path, "spark:\n  shuffle_partitions: 4\n", p="{}\n")
    env = {"CTLAKE__SPARK__SHUFFLE_PARTITIONS": "12", "CTLAKE__SPARK__UI_ENABLED": "false",
           "CTLAKE__ELASTICSEARCH__API_KEY": "abc", "CTLAKE_PROFILE": "p"}
    cfg = load_config(conf_dir=conf, environ=env)
    assert cfg.profile == "p"
    assert cfg.spark.shuffle_partitions == 12
    assert cfg.spark.ui_enabled is False
    assert cfg.elasticsearch.api_key == "abc"


def test_unknown_key_names_key_and_file(tmp_path):
    conf = write_conf(tmp_path, "spark:\n  master: local[*]\n", p="spark:\n  mastr: yarn\n")
    with pytest.raises(ConfigError) as err:
        load_config("p", conf_dir=conf, environ={})
    assert "spark.mastr" in str(err.value)
    assert "p.yaml" in str(err.value)


def test_unknown_section_from_environment(tmp_path):
    conf = write_conf(tmp_path, "{}\n", p="{}\n")
    with pytest.raises(ConfigError, match="sparkk.*CTLAKE__SPARKK__MASTER"):
        load_config("p", conf_dir=conf, environ={"CTLAKE__SPARKK__MASTER": "x"})


def test_wrong_type_is_an_error(tmp_path):
    conf = write_conf(tmp_path, "{}\n", p="spark:\n  shuffle_partitions: many\n")
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions: expected an integer.*p\.yaml"):
        load_config("p", conf_dir=conf, environ={})


def test_value_checks(tmp_path):
    conf = write_conf(tmp_path, "{}\n", p="spark:\n  shuffle_partitions: 0\n")
    with pytest.raises(ConfigError, match="shuffle_partitions: must be >= 1"):
        load_config("p", conf_dir=conf, environ={})
    conf2 = write_conf(tmp_path / "b", "{}\n", p="services:\n  mlflow:\n    port: 9092\n")
    with pytest.raises(ConfigError, match="port 9092 is also used"):
        load_config("p", conf_dir=conf2, environ={})
    conf3 = write_conf(tmp_path / "c", "{}\n", p="kafka:\n  security_protocol: TLS\n")
    with pytest.raises(ConfigError, match="security_protocol"):
        load_config("p", conf_dir=conf3, environ={})


def test_missing_profile_lists_known(tmp_path):
    conf = write_conf(tmp_path, "{}\n", local="{}\n")
    with pytest.raises(ConfigError, match=r"profile 'nope'.*\['local'\]"):
        load_config("nope", conf_dir=conf, environ={})


def test_relative_paths_resolve_at_project_root(tmp_path):
    conf = write_conf(tmp_path, "lake:\n  root: ./mylake\nservices:\n  state_dir: st\n", p="{}\n")
    cfg = load_config("p", conf_dir=conf, environ={})
    assert cfg.lake_root == str(tmp_path.resolve() / "mylake")
    assert cfg.state_dir == tmp_path.resolve() / "st"
    assert cfg.table_path("bronze.dicom_instances") == str(tmp_path.resolve() / "mylake/bronze/dicom_instances")
    with pytest.raises(ValueError):
        cfg.table_path("nolayer")

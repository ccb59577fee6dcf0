"""The pipeline unchanged on a Redis Cluster: three masters on loopback (Debian redis-server, joined with
``redis-cli --cluster create``), reached through ``?cluster=1`` on any one node's URL. Every key is hash-tagged
(``{fbv}:...``), so the multi-key commands (the bounded push script, XREADGROUP over the partitions, the MULTI
that writes alerts and acknowledges results) stay in one slot.

The camera's horse_down threshold is lowered to 5 s for this test (a per-camera override), so an alert is due
within a short run."""

from __future__ import annotations

import fbv_fault_harness as h
import pytest

from fbvision.run.redis_server import EmbeddedRedisCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CAMERAS = {"cam-down": "synthetic:down_long", "cam-walk": "synthetic:normal_walk"}
FAST_DOWN = {"rules": {"horse_down": {"escalation": [{"after_s": 5, "severity": "warning"}]}}}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    with EmbeddedRedisCluster(password=h.REDIS_PASSWORD) as cluster:
        settings = h.make_settings(CAMERAS, overrides={"cam-down": FAST_DOWN})
        run = h.FaultPipeline(settings, tmp_path_factory.mktemp("cluster"), redis_url=cluster.url)
        run.start()
        try:
            run.wait_flowing()
            run.sleep_until_scene("cam-down", 27)
            run.stop()
        except BaseException:
            run.close()
            raise
        nodes = {}
        for node in cluster.nodes:
            c = node.client()
            try:
                nodes[node.port] = [k.decode() for k in c.keys("*")]
            finally:
                c.close()
        yield run, nodes


def test_pipeline_runs_unchanged_on_a_cluster(cluster_run):
    run, _ = cluster_run
    assert run.crash_loop is None and sum(run.supervisor.restart_counts.values()) == 0
    b = run.frame_balance()
    assert b["inferred"] >= 5 * 2 * 10, b
    assert b["unaccounted_queue"] == 0 and b["unaccounted_inference"] == 0 and b["unaccounted_logic"] == 0, b
    h.FIGURES.append(f"Redis Cluster (3 masters): {b['inferred']} frames inferred, {b['judged']} judged, "
                     f"{len(run.alerts)} alert events delivered")


def test_alert_delivered_once_through_the_cluster(cluster_run):
    run, _ = cluster_run
    expected = h.expected_for(run, ["cam-down"], run.stopped_at)
    acc = h.account_alerts(run, CAMERAS, expected, allowance_s=5.0)
    assert acc.expected == 1 and acc.delivered == 1 and not acc.duplicated and not acc.unexpected, acc


def test_every_key_is_hash_tagged_into_one_slot(cluster_run):
    _, nodes = cluster_run
    holding = {port: keys for port, keys in nodes.items() if keys}
    assert len(holding) == 1, {p: len(k) for p, k in nodes.items()}  # one slot -> one master
    keys = next(iter(holding.values()))
    assert keys and all(k.startswith("{fbv}:") for k in keys), keys
    assert any(k.endswith("batch_frames") or "batch_results" in k for k in keys)

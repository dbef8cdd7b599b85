"""The benchmark runs every method at a tiny shape and reports what the book page reads."""

import pytest

from plus.bench import BenchConfig, main, run_bench


def test_the_benchmark_times_every_method_on_the_same_work(tmp_path):
    bench = BenchConfig(profile="smoke", num_contexts=2, num_samples=2, max_summary_tokens=4, warmup_steps=1, steps=1)
    result = run_bench(bench, workdir=tmp_path)
    methods = {"plus", "plus_reference", "trl_rloo"}
    for key in ("seconds_per_step", "tokens_per_second", "peak_rss_mb"):
        assert set(result[key]) == methods and all(value > 0 for value in result[key].values()), key
    assert all(len(steps) == 2 for steps in result["step_seconds"].values())  # warm-up + timed, for every method
    assert result["ratios"]["plus_reference/plus"] == pytest.approx(
        result["seconds_per_step"]["plus_reference"] / result["seconds_per_step"]["plus"]
    )
    assert result["shape"]["summaries_per_step"] == 4 and result["shape"]["context_tokens"]["min"] > 0


def test_the_benchmark_writes_json_and_rejects_unknown_methods(tmp_path):
    output = tmp_path / "bench.json"
    result = main(
        [
            "--profile",
            "smoke",
            "--estimator",
            "ppo",
            "--methods",
            "plus,plus_reference",
            "--contexts",
            "2",
            "--samples",
            "2",
            "--summary-tokens",
            "3",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--output",
            str(output),
        ]
    )
    assert output.exists() and set(result["seconds_per_step"]) == {"plus", "plus_reference"}
    with pytest.raises(ValueError, match="Unknown benchmark methods"):
        run_bench(BenchConfig(profile="smoke"), methods=["vllm"])
    with pytest.raises(ValueError, match="trl_rloo runs only"):
        run_bench(
            BenchConfig(profile="smoke", estimator="ppo", steps=1, warmup_steps=0, num_contexts=1, num_samples=2),
            methods=["trl_rloo"],
            workdir=tmp_path,
        )

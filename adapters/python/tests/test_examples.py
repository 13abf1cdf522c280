"""The shipped examples load the way their engines load them (without the engines)."""

from __future__ import annotations

import importlib
import importlib.util
import py_compile
import re
import shutil
import subprocess
import unittest
from pathlib import Path

from therapygym_adapters import openrlhf as ora
from therapygym_adapters.verl import TherapyInteraction

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class ExamplesTest(unittest.TestCase):
    def test_openrlhf_agent_file_loads_like_openrlhf_loads_it(self):
        # openrlhf/trainer/ray/vllm_engine.py::_load_agent_executor (0.11.0)
        spec = importlib.util.spec_from_file_location("agent_module", EXAMPLES / "openrlhf" / "therapy_agent.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = module.AgentExecutor
        self.assertTrue(issubclass(cls, ora._MultiTurnAgentExecutor))
        executor = cls()
        self.assertTrue(issubclass(executor.agent_instance_cls, ora.TherapyAgentInstance))
        cfg = executor.agent_instance_cls.config
        self.assertEqual(cfg.template.name, "chatml")
        self.assertEqual(dict(cfg.limits), {"max_therapist_turns": 5, "max_total_tokens": 12288})

    def test_verl_interaction_yaml_names_an_importable_class(self):
        text = (EXAMPLES / "verl" / "therapy_interaction.yaml").read_text()
        names = re.findall(r"class_name:\s*(\S+)", text)
        self.assertEqual(names, ["therapygym_adapters.verl.TherapyInteraction"])
        module, _, cls = names[0].rpartition(".")
        self.assertIs(getattr(importlib.import_module(module), cls), TherapyInteraction)
        self.assertIn("name: therapy", text)

    def test_scripts_parse(self):
        py_compile.compile(str(EXAMPLES / "trl" / "train_trl_grpo.py"), doraise=True)
        bash = shutil.which("bash")
        self.assertIsNotNone(bash, "bash is needed to check the launch scripts")
        for script in sorted(EXAMPLES.glob("*/*.sh")):
            r = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"{script}: {r.stderr}")


if __name__ == "__main__":
    unittest.main()


class ScaleDocTest(unittest.TestCase):
    """docs/scale.md's Kubernetes manifest and SLURM script are well-formed."""

    DOC = Path(__file__).resolve().parents[3] / "docs" / "scale.md"

    def blocks(self, lang):
        return re.findall(r"```" + lang + r"\n(.*?)```", self.DOC.read_text(), re.S)

    def test_slurm_and_merge_scripts_parse_as_bash(self):
        blocks = self.blocks("bash")
        self.assertGreaterEqual(len(blocks), 2)
        for b in blocks:
            subprocess.run(["bash", "-n"], input=b, text=True, check=True)
        self.assertIn("#SBATCH --array=0-15", blocks[0])
        self.assertIn("--shard auto/16", blocks[0])

    def test_indexed_job_manifest_is_a_kubernetes_indexed_job(self):
        (text,) = self.blocks("yaml")
        try:
            import yaml
        except ImportError:
            # Without PyYAML: at least the keys the Job needs, at their indentation.
            for line in ("kind: Job", "  completionMode: Indexed", "  completions: 16"):
                self.assertIn(line + "\n", text)
            return
        job = yaml.safe_load(text)
        self.assertEqual((job["apiVersion"], job["kind"]), ("batch/v1", "Job"))
        spec = job["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        (container,) = spec["template"]["spec"]["containers"]
        self.assertIn("--shard auto/16", container["args"][0])
        self.assertEqual(spec["completions"], 16)


class BenchScriptsTest(unittest.TestCase):
    """scripts/bench.sh and its benchmarks parse, and the table is made from their outputs."""

    ROOT = Path(__file__).resolve().parents[3]

    def test_bench_scripts_parse(self):
        scripts = [self.ROOT / "scripts" / "bench.sh", *sorted((self.ROOT / "bench").glob("*/run.sh"))]
        self.assertGreaterEqual(len(scripts), 7)
        for script in scripts:
            r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"{script}: {r.stderr}")
        for py in sorted((self.ROOT / "bench").rglob("*.py")):
            py_compile.compile(str(py), doraise=True)

    def test_the_table_puts_each_figure_beside_its_baseline_and_says_why_it_misses(self):
        import sys
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            Path(work, "orchestration.txt").write_text(
                "ORCH impl=rust latency_ms=20 concurrency=256 sessions=2000 calls=22000 seconds=4.0 "
                "ideal_s=1.760 of_ideal=0.440 peak_rss_mb=149\n"
                "ORCH impl=python latency_ms=20 concurrency=256 sessions=2000 calls=22000 seconds=140.0 "
                "ideal_s=1.760 of_ideal=0.013 peak_rss_mb=88\n"
            )
            Path(work, "inference.txt").write_text(
                "RUST_TOKENS=256\nRUST_TOK_S=99.0\nPY_TOKENS=256\nPY_TOK_S=90.0\n"
            )
            r = subprocess.run(
                [sys.executable, str(self.ROOT / "bench" / "results.py"), work, "quick", "test"],
                capture_output=True, text=True, cwd=self.ROOT, check=True,
            )
        rows = {line.split(" | ")[0].lstrip("| "): line for line in r.stdout.splitlines() if line.startswith("| ")}
        orch = rows["1. eval orchestration, 2000 sessions, 20 ms/call, C=256"]
        self.assertIn("Python asyncio+openai: 14.3 sessions/s", orch)
        self.assertIn("35.00×", orch)
        self.assertIn("missed: 0.44 < 0.9 of ideal: CPU-bound at 5500 calls/s", orch)
        self.assertIn("| 1.10× | ≥ 0.9× llama-cpp-python | met |", rows["3. embedded decode, SmolLM2-135M Q4_1, 2 threads"])
        # A benchmark without output is a row that says so, not a missing row.
        self.assertIn("did not run: no output", rows["4. validate"])

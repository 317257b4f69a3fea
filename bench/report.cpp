#include "bench/report.hpp"

#include <cstdio>
#include <fstream>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/temp_dir.hpp"

namespace vmckpt::bench {
namespace {

using namespace std::chrono_literals;

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// "median (min–max)" of a stats object; scale divides every value.
std::string cell(const Json& s, double scale = 1, const char* f = "%.1f") {
  if (!s.is_object()) return "–";
  std::string med = fmt(f, s["median"].get<double>() / scale);
  if (s["runs"].size() < 2) return med;
  return cat(med, " (", fmt(f, s["min"].get<double>() / scale), "–", fmt(f, s["max"].get<double>() / scale), ")");
}

const Json* findMethod(const Json& size, const std::string& method) {
  for (const auto& m : size["methods"])
    if (m["method"] == method) return &m;
  return nullptr;
}

double median(const Json& m, const char* field) {
  const Json& s = m[field];
  return s.is_object() ? s["median"].get<double>() : 0;
}

void table(std::string& out, const Json& sizes) {
  out += "| Guest RAM (written) | Method | Pause ms | Snapshot total ms | Restore to running ms | Written MiB | "
         "Disk per snapshot MiB (64 MiB dirtied) | Restores verified |\n";
  out += "|---|---|---|---|---|---|---|---|\n";
  for (const auto& s : sizes) {
    std::string ram = cat(s["memory_mib"].get<std::uint64_t>() / 1024.0 >= 1
                              ? fmt("%.0f GiB", s["memory_mib"].get<double>() / 1024)
                              : cat(s["memory_mib"].get<std::uint64_t>(), " MiB"),
                          " (", s["written_mib"].get<std::uint64_t>(), " MiB)");
    for (const auto& m : s["methods"]) {
      if (!m["ok"].get<bool>()) {
        out += cat("| ", ram, " | ", m["label"].get<std::string>(), " | **failed**: ",
                   m.value("error", std::string("?")), " | | | | | ", m["restores_verified"].get<int>(), " |\n");
        continue;
      }
      out += cat("| ", ram, " | ", m["label"].get<std::string>(), " | ", cell(m["pause_ms"]), " | ",
                 cell(m["total_ms"], 1, "%.0f"), " | ", cell(m["restore_ms"], 1, "%.0f"), " | ",
                 cell(m["written_bytes"], 1 << 20, "%.0f"), " | ", cell(m["second_snapshot_bytes"], 1 << 20, "%.0f"),
                 " | ", m["restores_verified"].get<int>(), "/", m["restore_ms"].is_object() ? m["restore_ms"]["runs"].size() : 0,
                 " |\n");
    }
  }
}

// snapshot --live (vmckpt-live) against the fast path, where a run has both.
void liveAgainstFastPath(std::string& out, const Json& sizes) {
  std::string lines;
  for (const auto& s : sizes) {
    const Json* live = findMethod(s, "vmckpt-live");
    const Json* fast = findMethod(s, kVmckptMethod);
    if (!live || !fast || !(*live)["ok"].get<bool>() || !(*fast)["ok"].get<bool>()) continue;
    lines += cat("- ", s["memory_mib"].get<std::uint64_t>(), " MiB guest: pause ",
                 fmt("%.1f", median(*live, "pause_ms")), " ms against ", fmt("%.1f", median(*fast, "pause_ms")),
                 " ms, snapshot total ", fmt("%.0f", median(*live, "total_ms")), " ms against ",
                 fmt("%.0f", median(*fast, "total_ms")), " ms, restore ", fmt("%.0f", median(*live, "restore_ms")),
                 " ms against ", fmt("%.0f", median(*fast, "restore_ms")), " ms\n");
  }
  if (!lines.empty()) out += cat("\nsnapshot --live (anonymous RAM) against the fast path (RAM file), medians:\n\n", lines);
}

}  // namespace

Json ratiosAt(const Json& size) {
  const Json* v = findMethod(size, kVmckptMethod);
  const Json* b = findMethod(size, kBaselineMethod);
  Json r = {{"pause", nullptr}, {"restore", nullptr}};
  if (!v || !b || !(*v)["ok"].get<bool>() || !(*b)["ok"].get<bool>()) return r;
  double vp = median(*v, "pause_ms"), bp = median(*b, "pause_ms");
  double vr = median(*v, "restore_ms"), br = median(*b, "restore_ms");
  if (vp > 0) r["pause"] = bp / vp;
  if (vr > 0) r["restore"] = br / vr;
  return r;
}

std::string markdownReport(const Json& res) {
  std::string out;
  const Json& h = res["host"];
  out += cat("Run of ", h.value("date", ""), " on ", h.value("cores", 0), " cores, ", h.value("memory", ""), ", ",
             h.value("cpu", ""), "; ", h.value("qemu", ""), ", kernel ", h.value("kernel", ""), ", accel ",
             h.value("accel", ""), ". Every store on ", h.value("filesystem", ""), ". ", res["config"]["runs"].get<int>(),
             " runs per method: median (min–max).\n\n");
  if (!res["sizes"].empty()) {
    table(out, res["sizes"]);
    liveAgainstFastPath(out, res["sizes"]);
  }
  if (!res["sizes"].empty() && findMethod(res["sizes"][0], kBaselineMethod)) {
    out += "\nRatios (QEMU stop+migrate-to-file ÷ vmckpt on Btrfs, medians of the same run):\n\n";
    for (const auto& s : res["sizes"]) {
      Json r = ratiosAt(s);
      out += cat("- ", s["memory_mib"].get<std::uint64_t>(), " MiB guest: pause ",
                 r["pause"].is_null() ? std::string("n/a") : fmt("%.0fx", r["pause"].get<double>()), ", restore ",
                 r["restore"].is_null() ? std::string("n/a") : fmt("%.0fx", r["restore"].get<double>()), "\n");
    }
  }
  if (res.contains("scaling") && res["scaling"].is_object()) {
    out += "\nScaling check (one large guest, RAM written sparsely):\n\n";
    table(out, Json::array({res["scaling"]}));
  }
  if (res.contains("runtime_cost")) {
    const Json& rc = res["runtime_cost"];
    out += "\nRuntime cost between snapshots (guest writing its RAM continuously):\n\n";
    if (rc.value("ok", true) == false) {
      out += cat("- **failed**: ", rc.value("error", std::string("?")), "\n");
    } else {
      out += "| RAM backing | Guest write bandwidth MiB/s | Host disk writes MiB/s |\n|---|---|---|\n";
      if (rc.contains("anonymous"))
        out += cat("| QEMU anonymous RAM | ", cell(rc["anonymous"]["mib_per_s"], 1, "%.0f"), " | – |\n");
      if (rc.contains("file_backed"))
        out += cat("| vmckpt shared file | ", cell(rc["file_backed"]["mib_per_s"], 1, "%.0f"), " | ",
                   cell(rc["file_backed"].value("disk_write_mib_per_s", Json()), 1, "%.0f"), " |\n");
      if (rc.contains("overhead_percent") && rc["overhead_percent"].is_number())
        out += cat("\nOverhead of file-backed RAM: ", fmt("%.1f", rc["overhead_percent"].get<double>()), " %",
                   rc.value("note", std::string()).empty() ? "" : cat(" (", rc["note"].get<std::string>(), ")"),
                   "\n");
    }
  }
  return out;
}

void plotPng(const Json& res, const std::string& png) {
  auto gnuplot = findExecutable("gnuplot");
  if (!gnuplot) raise("gnuplot not found (apt-get install gnuplot-nox)");
  TempDir dir("vmckpt-plot");
  if (dir.path().empty()) raise("cannot make a temporary directory for the plot");
  // One data block per method (gnuplot `index`): GiB, median, min, max.
  std::vector<std::string> labels;
  std::string pause, restore;
  std::vector<std::string> methodKeys;
  for (const auto& s : res["sizes"])
    for (const auto& m : s["methods"])
      if (std::find(methodKeys.begin(), methodKeys.end(), m["method"].get<std::string>()) == methodKeys.end()) {
        methodKeys.push_back(m["method"]);
        labels.push_back(m["label"]);
      }
  auto row = [](const Json& st, double gib) {
    return cat(gib, " ", st["median"].get<double>(), " ", st["min"].get<double>(), " ", st["max"].get<double>(), "\n");
  };
  // The scaling check's guest extends the same lines (its own RAM was written sparsely).
  Json all = res["sizes"];
  if (res.contains("scaling") && res["scaling"].is_object()) all.push_back(res["scaling"]);
  for (const auto& key : methodKeys) {
    pause += cat("# ", key, "\n");
    restore += cat("# ", key, "\n");
    for (const auto& s : all) {
      const Json* m = findMethod(s, key);
      if (!m || !(*m)["ok"].get<bool>()) continue;
      double gib = s["memory_mib"].get<double>() / 1024;
      if ((*m)["pause_ms"].is_object()) pause += row((*m)["pause_ms"], gib);
      if ((*m)["restore_ms"].is_object()) restore += row((*m)["restore_ms"], gib);
    }
    pause += "\n\n";
    restore += "\n\n";
  }
  check(fs::writeFileAtomic(dir.path() + "/pause.dat", pause, 0644), "plot data");
  check(fs::writeFileAtomic(dir.path() + "/restore.dat", restore, 0644), "plot data");
  auto quote = [](std::string s) {
    for (auto& c : s)
      if (c == '"') c = '\'';
    return cat("\"", s, "\"");
  };
  auto plots = [&](const std::string& file) {
    std::string p;
    for (size_t i = 0; i < methodKeys.size(); ++i)
      p += cat(i ? ", " : "", quote(dir.path() + "/" + file), " index ", i,
               " using 1:2:3:4 with yerrorlines lw 2 pt 7 title ", quote(labels[i]));
    return p;
  };
  const Json& h = res["host"];
  std::string script = cat(
      "set terminal pngcairo size 1400,640 font 'sans,11'\n", "set output ", quote(png), "\n",
      "set multiplot layout 1,2 title ",
      quote(cat("vmckpt vs QEMU's own snapshot methods (", h.value("date", ""), ", ", h.value("cores", 0), " cores, accel ",
                h.value("accel", ""), "; median, min-max bars)")),
      "\n", "set logscale xy 2\nset logscale y 10\nset grid\nset key below horizontal maxcols 3 font ',9'\n",
      "set xlabel 'guest memory (GiB, log scale)'\n", "set xtics (0.5, 1, 2, 4, 8, 16)\nset offsets graph 0.05, graph 0.05, 0, 0\n", "set ylabel 'pause (ms, log scale)'\nset title 'Pause: QMP STOP to RESUME'\n",
      "plot ", plots("pause.dat"), "\n", "set ylabel 'restore to running (ms, log scale)'\n",
      "set title 'Restore: nothing running to guest running'\n", "plot ", plots("restore.dat"), "\n",
      "unset multiplot\n");
  check(fs::writeFileAtomic(dir.path() + "/plot.gp", script, 0644), "plot script");
  auto r = runCommand({*gnuplot, dir.path() + "/plot.gp"}, Deadline::in(60s));
  if (!r) raise(cat("gnuplot: ", r.error().message()));
  if (!r->status.success()) raise(cat("gnuplot failed (", r->status.describe(), "): ", trim(r->err)));
}

}  // namespace vmckpt::bench

// The stac program on converted models: convert (simplified, calibrated, re-timed), inspect, logits
// on every SNN path, eval (with --sweep and --plot), chat and test-conversation; exit codes and messages.
#include <doctest/doctest.h>

#include <cmath>

#include "convert/convert.h"
#include "core/safetensors.h"
#include "tests/helpers.h"

using namespace stac;
using namespace stac::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A copy of the fixture (the SNN directory links its files to the source: never to the fixture),
// converted with --simplified into dir/snn.
fs::path simplified_snn(const TempDir& tmp, int levels = 8, int timesteps = 8) {
    copy_model(gpt2_fixture("tiny-gelu-f32"), tmp / "src");
    const fs::path out = tmp / "snn";
    const CliRun r = run_stac({"convert", "--model", (tmp / "src").string(), "--out", out.string(), "--simplified", "--levels",
                               std::to_string(levels), "--timesteps", std::to_string(timesteps)});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    return out;
}

std::vector<std::vector<float>> logits_of(const CliRun& r) {
    INFO(r.err);
    REQUIRE(r.rc == 0);
    return json::parse(r.out)["logits"].get<std::vector<std::vector<float>>>();
}

float worst_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    REQUIRE(a.size() == b.size());
    float m = 0;
    for (size_t t = 0; t < a.size(); ++t) {
        REQUIRE(a[t].size() == b[t].size());
        m = std::max(m, max_abs_diff(a[t].data(), b[t].data(), a[t].size()));
    }
    return m;
}

std::map<std::string, std::vector<float>> snn_tensors(const fs::path& dir) {
    std::map<std::string, std::vector<float>> out;
    const SafetensorsFile f = SafetensorsFile::open(dir / "snn.safetensors");
    for (const auto& e : f.entries()) {
        const Tensor t = f.tensor(e.name);
        out[e.name].assign(t.data<float>(), t.data<float>() + t.numel());
    }
    return out;
}

size_t count_of(const std::string& s, const std::string& part) {
    size_t n = 0;
    for (size_t p = s.find(part); p != std::string::npos; p = s.find(part, p + 1)) ++n;
    return n;
}

const char* kText =
    "The little town sat at the bottom of a green valley, where two rivers met and the road to the coast began. "
    "Every morning the baker opened his shop before sunrise, and the smell of fresh bread drifted down the main "
    "street. Children walked to school in small groups, talking about the games they would play in the afternoon.\n\n"
    "In the spring the farmers planted wheat and barley, and in the autumn they brought the harvest to the market "
    "square. Traders came from the cities in the north with cloth, tools and spices, and they stayed at the old inn "
    "by the bridge. The innkeeper knew every traveller by name and liked to tell stories about the great flood of "
    "many years ago.\n\n"
    "One winter a stranger arrived with a heavy bag of books. He rented a room above the library and spent his days "
    "reading by the window. Nobody knew where he had come from, but he was kind to everyone and taught the children "
    "to play chess. When the snow melted he left as quietly as he had come, leaving the books behind for the town.\n\n"
    "Years later the library still keeps his books on a shelf of their own, and the children who learned chess from "
    "him now teach their own sons and daughters on the long evenings of winter.\n";

}  // namespace

TEST_CASE("cli-snn: convert --simplified writes an SNN directory that inspect describes") {
    TempDir tmp;
    const fs::path snn = simplified_snn(tmp);
    for (const char* f : {"config.json", "model.safetensors", "snn_config.json", "snn.safetensors"}) {
        CAPTURE(f);
        CHECK(fs::exists(snn / f));
    }
    const json cfg = read_json_file(snn / "snn_config.json");
    CHECK(cfg["format"] == "stac-snn");
    CHECK(cfg["levels"] == 8);
    CHECK(cfg["timesteps"] == 8);
    CHECK(cfg["simplified"] == true);
    CHECK(cfg["n_layer"] == 2);

    CliRun r = run_stac({"inspect", "--model", snn.string(), "--json"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const json j = json::parse(r.out);
    REQUIRE(j.contains("snn"));
    CHECK(j["snn"]["levels"] == 8);
    CHECK(j["snn"]["timesteps"] == 8);
    CHECK(j["snn"]["schedule"] == "layerwise");
    CHECK(j["snn"]["simplified"] == true);
    CHECK(j["snn"]["token_scale"] == false);  // the GPT-2 default
    CHECK(j["snn"]["sites"] == SiteSet::defaults().str());
    CHECK(j["n_layer"] == 2);
    // A float model has no "snn" object.
    r = run_stac({"inspect", "--model", (tmp / "src").string(), "--json"});
    REQUIRE(r.rc == 0);
    CHECK_FALSE(json::parse(r.out).contains("snn"));
    // The text form names the spiking settings.
    r = run_stac({"inspect", "--model", snn.string()});
    CHECK(r.rc == 0);
    CHECK(contains(r.out, "S = 8 timesteps, L = 8 levels"));
    CHECK_FALSE(contains(r.out, "token-scaled"));
}

TEST_CASE("cli-snn: logits of an SNN directory on every path") {
    TempDir tmp;
    const fs::path snn = simplified_snn(tmp);
    const std::string m = snn.string();
    std::vector<int32_t> ids;
    for (int i = 0; i < 12; ++i) ids.push_back(int32_t((i * 379 + 17) % 1000));
    const std::string list = join_ids(ids);

    const auto spike = logits_of(run_stac({"logits", "--model", m, "--ids", list, "--path", "spike"}));
    const auto count = logits_of(run_stac({"logits", "--model", m, "--ids", list, "--path", "count"}));
    const auto qann = logits_of(run_stac({"logits", "--model", m, "--ids", list, "--qann"}));
    REQUIRE(spike.size() == ids.size());
    REQUIRE(spike[0].size() == 1000);
    CHECK(spike == count);  // layer-wise: exact
    CHECK(spike == qann);
    // The same QANN in this process.
    {
        const LoadedSnn l = load_snn_model(snn);
        const SpikingGpt2 q(l.base, l.spec, {RunMode::Qann, Schedule::LayerWise, SpikePath::Count, 8});
        Tensor out = Tensor::empty({int64_t(ids.size()), 1000}, DType::F32);
        auto st = q.new_state();
        q.forward(ids, *st, LogitRows::All, out);
        bool same = true;
        for (size_t t = 0; t < ids.size(); ++t)
            for (size_t v = 0; v < 1000; ++v) same &= qann[t][v] == out.data<float>()[t * 1000 + v];
        CHECK(same);
        // And it is not the float network.
        const auto ann = logits_of(run_stac({"logits", "--model", (tmp / "src").string(), "--ids", list}));
        CHECK(worst_diff(ann, qann) > 1e-4f);
    }
    const auto inc = logits_of(run_stac({"logits", "--model", m, "--ids", list, "--incremental"}));
    CHECK(worst_diff(inc, spike) <= 1e-4f);

    const auto stream = logits_of(run_stac({"logits", "--model", m, "--ids", list, "--schedule", "streaming", "--timesteps", "64"}));
    REQUIRE(stream.size() == ids.size());
    bool finite = true;
    for (const auto& row : stream)
        for (float x : row) finite &= std::isfinite(x);
    CHECK(finite);
    MESSAGE("streaming S=64 vs QANN: max |logit diff| " << worst_diff(stream, qann));

    CliRun r = run_stac({"logits", "--model", m, "--ids", list, "--path", "count", "--schedule", "streaming"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "only in the layer-wise schedule"));
    CHECK(r.out.empty());
    r = run_stac({"logits", "--model", (tmp / "src").string(), "--ids", list, "--qann"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "apply to SNN directories"));
    r = run_stac({"logits", "--model", m, "--ids", list, "--path", "sideways"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "unknown path 'sideways'"));
    // S < L still runs, with a warning.
    r = run_stac({"logits", "--model", m, "--ids", list, "--timesteps", "4"});
    CHECK(r.rc == 0);
    CHECK(contains(r.err, "S = 4 < L = 8"));
}

TEST_CASE("cli-snn: convert errors") {
    TempDir tmp;
    copy_model(gpt2_fixture("tiny-gelu-f32"), tmp / "src");
    const std::string src = (tmp / "src").string();

    CliRun r = run_stac({"convert", "--model", src, "--out", (tmp / "x").string()});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "--simplified"));
    CHECK_FALSE(fs::exists(tmp / "x" / "snn_config.json"));
    r = run_stac({"convert", "--model", src, "--out", (tmp / "x").string(), "--simplified", "--levels", "500"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "--levels"));
    r = run_stac({"convert", "--model", src, "--simplified"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "--out"));
    r = run_stac({"convert", "--model", src, "--out", (tmp / "x").string(), "--simplified", "--sites", "q"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "go together"));
    r = run_stac({"convert", "--model", src, "--out", (tmp / "x").string(), "--simplified", "--schedule", "streaming",
                  "--sites", "attn_in,mlp_act"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "streaming schedule needs the attention sites"));
    // Token scaling: a bad value is a usage error; it cannot meet the streaming schedule, neither at
    // conversion, nor when an SNN directory is re-timed or run.
    r = run_stac({"convert", "--model", src, "--out", (tmp / "x").string(), "--simplified", "--token-scale", "maybe"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "--token-scale 'maybe'"));
    r = run_stac({"convert", "--model", src, "--out", (tmp / "x").string(), "--simplified", "--token-scale", "on",
                  "--schedule", "streaming"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "token scaling needs the layer-wise schedule"));
    CHECK_FALSE(fs::exists(tmp / "x" / "snn_config.json"));
    r = run_stac({"convert", "--model", src, "--out", (tmp / "ts").string(), "--simplified", "--token-scale", "on"});
    REQUIRE(r.rc == 0);
    CHECK(contains(r.out, "token-scaled"));
    CHECK(read_json_file(tmp / "ts" / "snn_config.json")["token_scale"] == true);
    r = run_stac({"logits", "--model", (tmp / "ts").string(), "--ids", "1,2,3", "--schedule", "streaming"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "cannot run a token-scaled SNN"));
    r = run_stac({"convert", "--model", (tmp / "ts").string(), "--out", (tmp / "ts2").string(), "--schedule", "streaming"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "token-scaled SNN cannot run the streaming schedule"));
    CHECK_FALSE(fs::exists(tmp / "ts2" / "snn_config.json"));
    r = run_stac({"convert", "--model", (tmp / "ts").string(), "--out", (tmp / "ts2").string(), "--token-scale", "off"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "--token-scale needs a float model"));
    r = run_stac({"logits", "--model", (tmp / "ts").string(), "--ids", "1,2,3"});
    CHECK(r.rc == 0);

    fs::create_directories(tmp / "busy");
    std::ofstream(tmp / "busy" / "notes.txt") << "keep me";
    r = run_stac({"convert", "--model", src, "--out", (tmp / "busy").string(), "--simplified"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "not an SNN directory"));
    CHECK(slurp(tmp / "busy" / "notes.txt") == "keep me");
    CHECK_FALSE(fs::exists(tmp / "busy" / "snn_config.json"));

    // A corrupted snn.safetensors: every command that loads it refuses, naming the file.
    r = run_stac({"convert", "--model", src, "--out", (tmp / "snn").string(), "--simplified", "--quiet"});
    REQUIRE(r.rc == 0);
    fs::resize_file(tmp / "snn" / "snn.safetensors", 20);
    r = run_stac({"logits", "--model", (tmp / "snn").string(), "--ids", "1,2,3"});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, (tmp / "snn" / "snn.safetensors").string()));
    CHECK(r.out.empty());
    r = run_stac({"inspect", "--model", (tmp / "snn").string()});
    CHECK(r.rc == 1);
    CHECK(contains(r.err, "snn.safetensors"));

    // eval needs an SNN directory and text.
    r = run_stac({"eval", "--model", src, "--text", "/dev/null"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "is not an SNN directory"));
}

TEST_CASE("cli-snn: re-timing and re-levelling an SNN directory") {
    TempDir tmp;
    const fs::path snn = simplified_snn(tmp);
    const fs::path snn4 = tmp / "snn4", snn16 = tmp / "snn16";
    CliRun r = run_stac({"convert", "--model", snn.string(), "--out", snn4.string(), "--timesteps", "4"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(contains(r.err, "note:"));
    CHECK(contains(r.err, "levels reduced to 4"));
    const json c4 = read_json_file(snn4 / "snn_config.json");
    CHECK(c4["timesteps"] == 4);
    CHECK(c4["levels"] == 4);
    // Every threshold doubled (clip / 4 instead of clip / 8); the clips stayed.
    const auto before = snn_tensors(snn), after = snn_tensors(snn4);
    REQUIRE(before.size() == after.size());
    int thresholds = 0;
    for (const auto& [name, v] : before) {
        CAPTURE(name);
        REQUIRE(after.count(name));
        const auto& w = after.at(name);
        REQUIRE(w.size() == v.size());
        const bool thr = name.size() > 10 && name.substr(name.size() - 10) == ".threshold";
        for (size_t i = 0; i < v.size(); ++i) CHECK(w[i] == (thr ? 2.0f * v[i] : v[i]));
        thresholds += thr;
    }
    CHECK(thresholds == 2 * 8);
    // Still exact: the layer-wise SNN of the re-timed directory equals its QANN.
    const std::string ids = "5,77,123,9,400,2";
    CHECK(logits_of(run_stac({"logits", "--model", snn4.string(), "--ids", ids})) ==
          logits_of(run_stac({"logits", "--model", snn4.string(), "--ids", ids, "--qann"})));
    // Options that need the float model are refused for an SNN directory.
    r = run_stac({"convert", "--model", snn.string(), "--out", (tmp / "no").string(), "--sites", "all"});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "--sites needs a float model"));

    r = run_stac({"convert", "--model", snn.string(), "--out", snn16.string(), "--levels", "16", "--quiet"});
    REQUIRE(r.rc == 0);
    CHECK(r.err.empty());
    const json c16 = read_json_file(snn16 / "snn_config.json");
    CHECK(c16["levels"] == 16);
    CHECK(c16["timesteps"] == 16);  // raised to L
    const auto t16 = snn_tensors(snn16);
    CHECK(t16.at("h.1.mlp_act.threshold")[3] == before.at("h.1.mlp_act.threshold")[3] / 2.0f);
}

TEST_CASE("cli-snn: calibrated conversion, eval, sweep, chat and test-conversation with the GPT-2 tokenizer") {
    TempDir tmp;
    const fs::path text_model = tmp / "text", snn = tmp / "tsnn";
    make_text_model(text_model);
    CliRun r = run_stac({"convert", "--model", text_model.string(), "--out", snn.string(), "--num-samples", "8", "--max-length",
                         "32", "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(r.out.empty());
    const json cfg = read_json_file(snn / "snn_config.json");
    CHECK(cfg["simplified"] == false);
    CHECK(cfg["calibration"]["samples"] == 8);
    CHECK(cfg["calibration"]["max_length"] == 32);
    CHECK(fs::exists(snn / "vocab.json"));
    CHECK(fs::exists(snn / "merges.txt"));

    const fs::path text = tmp / "text.txt";
    std::ofstream(text) << kText;
    const fs::path out_json = tmp / "eval.json";
    r = run_stac({"eval", "--model", snn.string(), "--text", text.string(), "--max-tokens", "200", "--json", out_json.string(),
                  "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const json ev = read_json_file(out_json);
    CHECK(ev["tokens"] == 200);
    CHECK(ev["windows"] == 4);  // 64, 64, 64, 8
    for (const char* k : {"ann", "qann", "snn_result"}) {
        CAPTURE(k);
        REQUIRE(ev[k]["perplexity"].is_number());
        const double ppl = ev[k]["perplexity"].get<double>();
        CHECK(std::isfinite(ppl));
        CHECK(ppl > 1.0);
        CHECK(ev[k]["positions"] == 200);
    }
    CHECK(ev["ann"]["top1_agreement"] == 1.0);
    CHECK(ev["snn_result"]["max_abs_logit_diff_vs_reference"] == 0.0);
    CHECK(ev["snn_result"]["perplexity"] == ev["qann"]["perplexity"]);
    CHECK(ev["spikes"].is_object());
    CHECK(contains(r.out, "perplexity"));
    // --special: "<|endoftext|>" in the text is the control token (1 id), else text (several ids).
    const fs::path eot = tmp / "eot.txt";
    std::ofstream(eot) << "One story ends here.<|endoftext|>Another begins.";
    int64_t tokens[2] = {0, 0};
    for (int special = 0; special < 2; ++special) {
        std::vector<std::string> args = {"eval", "--model", snn.string(), "--text", eot.string(), "--json", out_json.string(), "--quiet", "--qann"};
        if (special) args.push_back("--special");
        r = run_stac(args);
        INFO(r.err);
        REQUIRE(r.rc == 0);
        tokens[special] = read_json_file(out_json)["tokens"].get<int64_t>();
    }
    CHECK(tokens[1] > 2);
    CHECK(tokens[0] > tokens[1]);

    const fs::path svg = tmp / "sweep.svg", sweep_json = tmp / "sweep.json";
    // The sweep runs 10 evaluations: a short text keeps it quick (scoring a 50257-token vocabulary dominates).
    r = run_stac({"eval", "--model", snn.string(), "--text", text.string(), "--max-tokens", "24", "--sweep", "--levels-list", "4,8",
                  "--plot", svg.string(), "--json", sweep_json.string(), "--quiet"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const std::string s = slurp(svg);
    CHECK(s.rfind("<svg", 0) == 0);
    CHECK(contains(s, "</svg>"));
    const json sw = read_json_file(sweep_json);
    CHECK(sw["tokens"] == 24);
    REQUIRE(sw["sweep"].is_array());
    CHECK(sw["sweep"].size() == 2 * 3 + 4);  // layer-wise L in {4, 8} x S in {L/2, L, 2L}; streaming S in {L, 2L, 4L, 8L}
    int exact = 0;
    for (const json& row : sw["sweep"]) {
        CAPTURE(row.dump());
        const int L = row["levels"], S = row["timesteps"];
        CHECK(row["effective_levels"] == std::min(L, S));
        if (row["schedule"] == "layerwise" && S >= L) {
            CHECK(row["snn"]["max_abs_logit_diff_vs_reference"] == 0.0);
            ++exact;
        }
    }
    CHECK(exact == 4);
    r = run_stac({"eval", "--model", snn.string(), "--text", text.string(), "--plot", svg.string()});
    CHECK(r.rc == 2);
    CHECK(contains(r.err, "--plot needs --sweep"));

    r = run_stac({"chat", "--model", snn.string(), "--max-new-tokens", "4", "--seed", "1"}, "Hello\nHow are you?\n");
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(count_of(r.out, "Assistant:") == 2);

    r = run_stac({"test-conversation", "--model", snn.string()});
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK_FALSE(contains(r.out, "FAIL"));
    CHECK(contains(r.out, " 0 failed"));
    CHECK(count_of(r.out, "[PASS]") >= 8);
}

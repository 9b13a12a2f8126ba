#include "support/test_support.hpp"

#include "converter/input_error.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "converter/atomic_file.hpp"

#include <fcntl.h>
#include <csignal>
#include <chrono>
#include <thread>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#ifndef MOE_SOURCE_DIR
#error "tests need MOE_SOURCE_DIR"
#endif

namespace moe::test {

std::filesystem::path source_dir() { return MOE_SOURCE_DIR; }
std::filesystem::path fixture_dir(const std::string& name) { return source_dir() / "tests" / "fixtures" / name; }

std::vector<ReferenceCase> load_reference(const std::string& fixture) {
  std::ifstream in(fixture_dir(fixture) / "reference.json");
  if (!in) throw std::runtime_error("cannot open reference.json of " + fixture);
  const auto j = nlohmann::json::parse(in);
  std::vector<ReferenceCase> out;
  for (const auto& c : j.at("cases")) {
    ReferenceCase rc;
    rc.prompt = c.value("prompt", std::string());
    rc.input_ids = c.at("input_ids").get<std::vector<int32_t>>();
    rc.logits = c.at("logits").get<std::vector<std::vector<float>>>();
    rc.greedy = c.at("greedy_continuation").get<std::vector<int32_t>>();
    out.push_back(std::move(rc));
  }
  return out;
}

AlignedBuffer::AlignedBuffer(const void* data, size_t n) : size_(n) {
  const size_t rounded = (n + 63) / 64 * 64;
  ptr_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded ? rounded : 64)));
  if (n) std::memcpy(ptr_.get(), data, n);
}

converter::QuantRecipe fp32_recipe() { return recipe(DType::f32); }

converter::QuantRecipe recipe(DType experts, DType attention, DType embeddings, int group) {
  converter::QuantRecipe r;
  r.experts = experts;
  r.attention = attention;
  r.embeddings = embeddings;
  r.group_size = group;
  return r;
}

AlignedBuffer convert_fixture(const std::string& fixture, const converter::QuantRecipe& recipe) {
  converter::ConvertOptions options;
  options.recipe = recipe;
  return AlignedBuffer(converter::convert_checkpoint(fixture_dir(fixture), options).bytes);
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "moe_test_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void copy_dir(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::filesystem::create_directories(to);
  for (const auto& entry : std::filesystem::directory_iterator(from)) {
    const auto dest = to / entry.path().filename();
    std::filesystem::copy_file(entry.path(), dest, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(dest, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  }
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ProgramResult run_program(std::vector<std::string> args) { return run_program_killed_after(std::move(args), 0); }

ProgramResult run_program_killed_after(std::vector<std::string> args, long kill_after_us,
                                       const std::function<void()>& on_first_output) {
  TempDir tmp;
  const auto out = tmp / "out", err = tmp / "err";
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644),
              e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  if (kill_after_us > 0 || on_first_output) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kill_after_us);
    bool output_seen = !on_first_output;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      std::error_code ec;
      if (!output_seen && std::filesystem::file_size(out, ec) > 0 && !ec) {
        output_seen = true;
        on_first_output();
      }
      if (kill_after_us > 0 && std::chrono::steady_clock::now() >= deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  } else {
    waitpid(pid, &status, 0);
  }
  return ProgramResult{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_file(out),
                       read_file(err)};
}

std::string shakespeare_text() {
  std::ifstream in(source_dir() / "data" / "tinyshakespeare.txt", std::ios::binary);
  if (!in) throw std::runtime_error("cannot open data/tinyshakespeare.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string shakespeare_val_split() {
  const std::string text = shakespeare_text();
  const size_t n = static_cast<size_t>(0.9 * static_cast<double>(text.size()));  // makeMoE: int(0.9*len(data))
  return text.substr(n);
}

EditableCheckpoint::EditableCheckpoint(const std::string& fixture) {
  copy_dir(fixture_dir(fixture), tmp.path());
  std::ifstream in(tmp / "config.json");
  config = nlohmann::json::parse(in);
  const converter::TensorStore store(fixture_dir(fixture));
  for (const auto& name : store.names()) {
    const auto& info = store.info(name);
    const std::vector<float> v = store.read_f32(name);
    tensors.push_back(converter::f32_tensor(name, info.shape, v.data()));
  }
}

converter::SafetensorOut& EditableCheckpoint::tensor(const std::string& name) {
  for (auto& t : tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

void EditableCheckpoint::remove(const std::string& name) {
  std::erase_if(tensors, [&](const converter::SafetensorOut& t) { return t.name == name; });
}

const std::filesystem::path& EditableCheckpoint::write() {
  converter::write_file_atomically(tmp / "config.json", config.dump(2));
  converter::write_safetensors(tmp / "model.safetensors", tensors);
  return tmp.path();
}

converter::Conversion convert_fp32(const std::filesystem::path& dir, int max_context) {
  converter::ConvertOptions o;
  o.recipe = fp32_recipe();
  o.max_context = max_context;
  return converter::convert_checkpoint(dir, o);
}

void expect_conversion_refusal(const std::filesystem::path& dir, const std::string& text) {
  try {
    (void)convert_fp32(dir);
    ADD_FAILURE() << "conversion succeeded, expected: " << text;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message: " << e.what();
  }
}

double relative_error(const float* got, const std::vector<float>& want) {
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  return max_diff / max_ref;
}

}  // namespace moe::test

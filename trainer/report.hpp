// Training records: CSV files a user can load anywhere, and a loss-curve SVG a browser
// opens. On resume, rows past the resumed step are dropped so a file tells one run.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace moe::train {

// A CSV file with a header; appends rows. `resume_step` >= 0 keeps only the existing
// rows whose first column (the step) is <= it.
class CsvLog {
 public:
  CsvLog(std::filesystem::path path, const std::string& header, int resume_step);
  void row(const std::string& line);  // flushed at once: a crash loses no rows

 private:
  std::filesystem::path path_;
};

struct CurvePoint {
  double step, value;
};

// Training loss (light, per logged step), evaluation train and validation losses (bold).
void write_loss_svg(const std::filesystem::path& path, const std::string& title,
                    const std::vector<CurvePoint>& train_steps, const std::vector<CurvePoint>& eval_train,
                    const std::vector<CurvePoint>& eval_val);

// Reads the points back from metrics.csv / evals.csv (for a resumed run's full curve).
std::vector<CurvePoint> read_csv_column(const std::filesystem::path& path, int column);

}  // namespace moe::train

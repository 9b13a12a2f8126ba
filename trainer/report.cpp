#include "trainer/report.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "converter/atomic_file.hpp"
#include "converter/input_error.hpp"

namespace moe::train {

CsvLog::CsvLog(std::filesystem::path path, const std::string& header, int resume_step) : path_(std::move(path)) {
  std::string kept = header + "\n";
  if (resume_step >= 0) {
    std::ifstream in(path_);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const long step = std::strtol(line.c_str(), nullptr, 10);
      if (step <= resume_step) kept += line + "\n";
    }
  }
  converter::write_file_atomically(path_, kept);
}

void CsvLog::row(const std::string& line) {
  std::ofstream out(path_, std::ios::app);
  out << line << "\n";
  out.flush();
  if (!out) throw InputError("cannot append to '" + path_.string() + "'");
}

std::vector<CurvePoint> read_csv_column(const std::filesystem::path& path, int column) {
  std::vector<CurvePoint> out;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string cell;
    std::vector<std::string> cells;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    if (static_cast<int>(cells.size()) > column && !cells[static_cast<size_t>(column)].empty())
      out.push_back(
          {std::strtod(cells[0].c_str(), nullptr), std::strtod(cells[static_cast<size_t>(column)].c_str(), nullptr)});
  }
  return out;
}

void write_loss_svg(const std::filesystem::path& path, const std::string& title,
                    const std::vector<CurvePoint>& train_steps, const std::vector<CurvePoint>& eval_train,
                    const std::vector<CurvePoint>& eval_val) {
  const double W = 800, H = 480, left = 70, right = 20, top = 40, bottom = 50;
  double max_step = 1, lo = 1e9, hi = -1e9;
  for (const auto* series : {&train_steps, &eval_train, &eval_val})
    for (const CurvePoint& p : *series) {
      max_step = std::max(max_step, p.step);
      lo = std::min(lo, p.value);
      hi = std::max(hi, p.value);
    }
  if (lo > hi) lo = 0, hi = 1;
  hi = std::min(hi, lo + 4.0);  // the first steps' loss would flatten everything else
  const double pad = (hi - lo) * 0.05 + 1e-6;
  lo -= pad, hi += pad;
  auto X = [&](double s) { return left + (W - left - right) * s / max_step; };
  auto Y = [&](double v) { return top + (H - top - bottom) * (1 - (std::min(v, hi) - lo) / (hi - lo)); };
  std::ostringstream svg;
  svg.setf(std::ios::fixed);
  svg.precision(1);
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << title << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and ticks
    const double v = lo + (hi - lo) * i / 5, s = max_step * i / 5;
    svg << "<line x1=\"" << left << "\" x2=\"" << W - right << "\" y1=\"" << Y(v) << "\" y2=\"" << Y(v)
        << "\" stroke=\"#ddd\"/>\n";
    svg.precision(2);
    svg << "<text x=\"" << left - 6 << "\" y=\"" << Y(v) + 4 << "\" text-anchor=\"end\">" << v << "</text>\n";
    svg.precision(0);
    svg << "<text x=\"" << X(s) << "\" y=\"" << H - bottom + 18 << "\" text-anchor=\"middle\">" << s << "</text>\n";
    svg.precision(1);
  }
  svg << "<text x=\"" << (left + W - right) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">step</text>\n"
      << "<text x=\"16\" y=\"" << (top + H - bottom) / 2 << "\" transform=\"rotate(-90 16 " << (top + H - bottom) / 2
      << ")\" text-anchor=\"middle\">loss (nats/char)</text>\n"
      << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << W - left - right << "\" height=\""
      << H - top - bottom << "\" fill=\"none\" stroke=\"#333\"/>\n";
  auto polyline = [&](const std::vector<CurvePoint>& pts, const char* color, double width) {
    if (pts.empty()) return;
    svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"" << width << "\" points=\"";
    for (const CurvePoint& p : pts) svg << X(p.step) << "," << Y(p.value) << " ";
    svg << "\"/>\n";
  };
  polyline(train_steps, "#9ecae1", 1);
  polyline(eval_train, "#08519c", 2);
  polyline(eval_val, "#d94801", 2);
  const double lx = W - right - 210, ly = top + 18;
  svg << "<line x1=\"" << lx << "\" x2=\"" << lx + 24 << "\" y1=\"" << ly << "\" y2=\"" << ly
      << "\" stroke=\"#9ecae1\"/><text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">training batch loss</text>\n"
      << "<line x1=\"" << lx << "\" x2=\"" << lx + 24 << "\" y1=\"" << ly + 18 << "\" y2=\"" << ly + 18
      << "\" stroke=\"#08519c\" stroke-width=\"2\"/><text x=\"" << lx + 30 << "\" y=\"" << ly + 22
      << "\">train (eval mode)</text>\n"
      << "<line x1=\"" << lx << "\" x2=\"" << lx + 24 << "\" y1=\"" << ly + 36 << "\" y2=\"" << ly + 36
      << "\" stroke=\"#d94801\" stroke-width=\"2\"/><text x=\"" << lx + 30 << "\" y=\"" << ly + 40
      << "\">validation</text>\n"
      << "</svg>\n";
  converter::write_file_atomically(path, svg.str());
}

}  // namespace moe::train

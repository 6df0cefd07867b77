// A small SVG line chart writer for `stac eval --plot`: panels of series over a shared x axis.
#pragma once

#include <string>
#include <vector>

namespace stac::cli {

struct Series {
    std::string name;
    std::vector<double> x, y;
};

struct Panel {
    std::string title, x_label, y_label;
    bool log2_x = false;
    std::vector<Series> series;
};

// Panels side by side in one SVG document.
std::string svg_chart(const std::string& title, const std::vector<Panel>& panels);

}  // namespace stac::cli

#include "cli/svg_plot.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace stac::cli {

namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string esc(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '<') o += "&lt;";
        else if (c == '>') o += "&gt;";
        else if (c == '&') o += "&amp;";
        else o += c;
    }
    return o;
}

std::string num(double v) {
    if (v != 0 && (std::fabs(v) >= 1e4 || std::fabs(v) < 1e-2)) return fmt::format("{:.2g}", v);
    return fmt::format("{:.3g}", v);
}

}  // namespace

std::string svg_chart(const std::string& title, const std::vector<Panel>& panels) {
    const double pw = 460, ph = 340, left = 70, right = 20, top = 50, bottom = 60;
    const double W = pw * double(panels.size()), H = ph + 90;
    std::string s = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n"
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        W, H, W / 2, esc(title));
    for (size_t pi = 0; pi < panels.size(); ++pi) {
        const Panel& p = panels[pi];
        const double ox = pw * double(pi), x0 = ox + left, x1 = ox + pw - right, y0 = top + ph - bottom, y1 = top;
        double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
        auto fx = [&](double x) { return p.log2_x ? std::log2(x) : x; };
        for (const Series& sr : p.series)
            for (size_t i = 0; i < sr.x.size(); ++i) {
                if (!std::isfinite(sr.y[i])) continue;
                xmin = std::min(xmin, fx(sr.x[i])), xmax = std::max(xmax, fx(sr.x[i]));
                ymin = std::min(ymin, sr.y[i]), ymax = std::max(ymax, sr.y[i]);
            }
        if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
        if (xmax == xmin) xmin -= 1, xmax += 1;
        if (ymax == ymin) ymin -= 0.5, ymax += 0.5;
        const double pad = 0.05 * (ymax - ymin);
        ymin -= pad, ymax += pad;
        auto X = [&](double x) { return x0 + (fx(x) - xmin) / (xmax - xmin) * (x1 - x0); };
        auto Y = [&](double y) { return y0 - (y - ymin) / (ymax - ymin) * (y0 - y1); };
        s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n", (x0 + x1) / 2, top - 8,
                         esc(p.title));
        s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", x0, y1, x1 - x0,
                         y0 - y1);
        for (int i = 0; i <= 4; ++i) {  // y ticks
            const double v = ymin + (ymax - ymin) * i / 4;
            s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>"
                             "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                             x0, Y(v), x1, Y(v), x0 - 5, Y(v) + 4, num(v));
        }
        // x ticks at the data's x values
        std::vector<double> xs;
        for (const Series& sr : p.series) xs.insert(xs.end(), sr.x.begin(), sr.x.end());
        std::sort(xs.begin(), xs.end());
        xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
        for (double x : xs)
            s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", X(x), y0 + 16, num(x));
        s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (x0 + x1) / 2, y0 + 36, esc(p.x_label));
        s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{}</text>\n", ox + 16,
                         (y0 + y1) / 2, ox + 16, (y0 + y1) / 2, esc(p.y_label));
        for (size_t si = 0; si < p.series.size(); ++si) {
            const Series& sr = p.series[si];
            const char* col = kColors[si % 8];
            std::string pts;
            for (size_t i = 0; i < sr.x.size(); ++i)
                if (std::isfinite(sr.y[i])) pts += fmt::format("{:.1f},{:.1f} ", X(sr.x[i]), Y(sr.y[i]));
            s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", col, pts);
            for (size_t i = 0; i < sr.x.size(); ++i)
                if (std::isfinite(sr.y[i]))
                    s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", X(sr.x[i]), Y(sr.y[i]), col);
            const double ly = top + ph - 10 + 14 * double(si % 4), lx = x0 + double(si / 4) * 200;
            s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"/>"
                             "<text x=\"{}\" y=\"{}\">{}</text>\n",
                             lx, ly + 30, lx + 20, ly + 30, col, lx + 25, ly + 34, esc(sr.name));
        }
    }
    return s + "</svg>\n";
}

}  // namespace stac::cli

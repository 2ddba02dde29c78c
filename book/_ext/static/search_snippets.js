// Search results of the course site: formulas in the snippets as plain text instead of TeX source
// (book/_ext/search_snippets.py adds this file to the search page).
"use strict";

const TEX_SYMBOLS = {
  alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", varepsilon: "ε", theta: "θ", lambda: "λ",
  mu: "μ", sigma: "σ", tau: "τ", phi: "φ", omega: "ω", Sigma: "Σ", Delta: "Δ", sum: "Σ", prod: "Π", ell: "ℓ",
  times: "×", cdot: "·", leq: "≤", le: "≤", geq: "≥", ge: "≥", neq: "≠", approx: "≈", propto: "∝", in: "∈",
  infty: "∞", dots: "…", ldots: "…", cdots: "⋯", to: "→", rightarrow: "→", partial: "∂", nabla: "∇", mid: "|",
  log: "log", exp: "exp", max: "max", min: "min", arg: "arg", left: "", right: "", quad: " ", qquad: " ",
};

/** A TeX formula as readable text: `\hat{p}_{i,k}` -> `p̂_(i,k)`, `\frac{a}{b}` -> `(a)/(b)`. */
const texToText = (tex) => {
  let text = tex.trim().replace(/^(\\\(|\\\[|\$\$)|(\\\)|\\\]|\$\$)$/g, "");
  text = text.replace(/\\(begin|end)\{[^{}]*\}/g, " ").replace(/\\\\/g, "; ").replace(/&/g, "");
  text = text.replace(/\\\{/g, "\uE000").replace(/\\\}/g, "\uE001");  // literal braces, out of the groups' way
  const group = "\\{([^{}]*)\\}";
  for (let i = 0; i < 10; i += 1) {  // innermost groups first, as deep as formulas nest
    const before = text;
    text = text
      .replace(new RegExp("\\\\frac" + group + group, "g"), "($1)/($2)")
      .replace(new RegExp("\\\\sqrt" + group, "g"), "√($1)")
      .replace(new RegExp("\\\\(hat|widehat)" + group, "g"), (_, _hat, x) => x + "\u0302")
      .replace(new RegExp("\\\\(bar|overline)" + group, "g"), (_, _bar, x) => x + "\u0304")
      .replace(new RegExp("\\\\(mathcal|mathrm|mathbf|mathbb|boldsymbol|text|operatorname)" + group, "g"), "$2")
      .replace(new RegExp("([_^])" + group, "g"), (_, mark, x) => mark + (x.length > 1 ? `(${x})` : x));
    if (text === before) break;
  }
  text = text.replace(/\\([A-Za-z]+)/g, (_, name) => TEX_SYMBOLS[name] ?? name);
  text = text.replace(/\\[,;:! ]/g, " ").replace(/\\([%$#_])/g, "$1").replace(/[{}]/g, "");
  text = text.replace(/\uE000/g, "{").replace(/\uE001/g, "}");
  return text.replace(/\s+/g, " ").trim();
};

document.addEventListener("DOMContentLoaded", () => {
  if (typeof Search === "undefined") return;  // Sphinx's searchtools.js defines it on the search page
  const htmlToText = Search.htmlToText;
  Search.htmlToText = (htmlString, anchor) => {
    const page = new DOMParser().parseFromString(htmlString, "text/html");
    page.querySelectorAll(".math").forEach((formula) => { formula.textContent = texToText(formula.textContent); });
    return htmlToText(page.documentElement.outerHTML, anchor);
  };
});

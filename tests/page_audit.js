// Loaded by tests/test_book.py into a page served beside the built book: opens every page of the book in a
// 1280 px wide frame, waits for MathJax, and writes what a reader would see wrong into <pre id="report">.
async function audit(doc) {
  const article = doc.querySelector("article.bd-article") || doc.querySelector("main") || doc.body;
  const column = article.clientWidth;
  const found = {column, wide_tables: [], broken_images: [], uncaptioned_figures: [], latex: [], reprs: [], errors: 0};
  article.querySelectorAll("table").forEach((table) => {
    if (table.scrollWidth > column + 1) {
      found.wide_tables.push(`${table.scrollWidth} px: ${(table.innerText || "").trim().slice(0, 60)}`);
    }
  });
  article.querySelectorAll("img").forEach((img) => {
    const src = img.getAttribute("src");
    if (!img.complete || img.naturalWidth === 0) found.broken_images.push(src);
    const caption = img.closest("figure")?.querySelector("figcaption");
    if (img.closest(".cell_output, figure") && !/Fig\. \d+/.test(caption?.innerText || "")) {
      found.uncaptioned_figures.push(src);
    }
  });
  found.latex = ((article.innerText || "").match(/\$\$|\\\(|\\\)|\\\[|\\\]|\\(frac|mathbb|lambda|phi)\b/g) || []);
  article.querySelectorAll(".cell_output").forEach((output) => {
    const text = output.innerText || "";
    found.reprs.push(...(text.match(/PosixPath\(|\b[A-Z]\w*\(\w+=|object at 0x|\{'\w+': |\bnan%|\bNaN\b/g) || []));
  });
  found.errors = article.querySelectorAll(".output.traceback, .output.error, .output.stderr").length;
  return found;
}

function load(page) {
  return new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.style.width = "1280px";
    frame.style.height = "1000px";
    frame.onload = () => setTimeout(async () => {
      let found;
      try {
        found = await audit(frame.contentDocument);
      } catch (error) {
        found = {failed: String(error)};
      }
      frame.remove();
      resolve(found);
    }, 5000);  // virtual time: MathJax typesets and images load meanwhile
    frame.src = page;
    document.body.appendChild(frame);
  });
}

(async () => {
  const report = {};
  for (const page of PAGES) report[page] = await load(page);
  document.getElementById("report").textContent = JSON.stringify(report);
})();

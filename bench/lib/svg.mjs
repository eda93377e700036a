// The benchmark's chart, with no library: one horizontal bar per figure, the ratio
// lambdo/peer on a log scale around 1 (bars to the left: lambdo's figure is smaller).
// rows: [{ label, ratio, better: 'lower'|'higher', goal (ratio or undefined), met, detail }]
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function fmtRatio(r) {
  if (!Number.isFinite(r)) return 'n/a';
  if (r >= 100) return r.toFixed(0);
  if (r >= 1) return r.toFixed(2);
  return `1/${(1 / r) >= 100 ? (1 / r).toFixed(0) : (1 / r).toFixed(1)}`;
}

export function ratioChart({ title, subtitle, rows }) {
  const W = 1000;
  const labelW = 330;
  const right = 250;
  const plotW = W - labelW - right;
  const rowH = 34;
  const top = 78;
  const H = top + rows.length * rowH + 58;
  const finite = rows.map((r) => r.ratio).filter((r) => Number.isFinite(r) && r > 0);
  const lo = Math.min(-1, Math.floor(Math.log10(Math.min(...finite, 1) / 1.5)));
  const hi = Math.max(1, Math.ceil(Math.log10(Math.max(...finite, 1) * 1.5)));
  const x = (r) => labelW + ((Math.log10(r) - lo) / (hi - lo)) * plotW;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="16" y="26" font-size="17" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="16" y="46" fill="#555">${esc(subtitle)}</text>`);
  // decades
  for (let d = lo; d <= hi; d++) {
    const xx = x(10 ** d);
    out.push(`<line x1="${xx.toFixed(1)}" y1="${top - 8}" x2="${xx.toFixed(1)}" y2="${top + rows.length * rowH}" stroke="${d === 0 ? '#333' : '#ddd'}" stroke-width="${d === 0 ? 1.5 : 1}"/>`);
    const lab = d === 0 ? '1 (same)' : d < 0 ? `1/${10 ** -d}` : `${10 ** d}`;
    out.push(`<text x="${xx.toFixed(1)}" y="${top + rows.length * rowH + 18}" text-anchor="middle" fill="#555" font-size="11">${lab}</text>`);
  }
  out.push(`<text x="${labelW + plotW / 2}" y="${top + rows.length * rowH + 38}" text-anchor="middle" fill="#555" font-size="12">lambdo / peer (log scale; left of 1: lambdo's figure is smaller)</text>`);
  out.push(`<text x="${labelW + plotW + 10}" y="${top - 14}" fill="#555" font-size="11">ratio, goal</text>`);
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    out.push(`<text x="${labelW - 10}" y="${y + 14}" text-anchor="end">${esc(r.label)}</text>`);
    if (r.detail) out.push(`<text x="${labelW - 10}" y="${y + 27}" text-anchor="end" fill="#777" font-size="10.5">${esc(r.detail)}</text>`);
    if (Number.isFinite(r.ratio) && r.ratio > 0) {
      const x1 = x(1);
      const x2 = x(r.ratio);
      const good = r.better === 'higher' ? r.ratio >= 1 : r.ratio <= 1;
      const fill = good ? '#2e8b57' : '#c0392b';
      out.push(`<rect x="${Math.min(x1, x2).toFixed(1)}" y="${y + 4}" width="${Math.max(1.5, Math.abs(x2 - x1)).toFixed(1)}" height="${rowH - 12}" fill="${fill}" fill-opacity="0.8"/>`);
    }
    if (Number.isFinite(r.goal)) {
      const gx = x(r.goal);
      out.push(`<line x1="${gx.toFixed(1)}" y1="${y + 1}" x2="${gx.toFixed(1)}" y2="${y + rowH - 5}" stroke="#000" stroke-width="2" stroke-dasharray="3,2"/>`);
    }
    const goalText = r.goalText ? `  ${r.goalText}: ${r.met === true ? '✓ met' : r.met === false ? '✗ not met' : ''}` : '';
    out.push(`<text x="${labelW + plotW + 10}" y="${y + 17}" font-size="12">${esc(fmtRatio(r.ratio))}  <tspan fill="${r.met === false ? '#c0392b' : '#2e8b57'}" font-size="11">${esc(goalText)}</tspan></text>`);
  });
  out.push(`<text x="16" y="${H - 8}" fill="#777" font-size="10.5">dashed line: the goal; green: lambdo better, red: lambdo worse (events/s: higher is better; every other figure: lower is better)</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

export { fmtRatio };

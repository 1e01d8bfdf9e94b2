// Draws a QR code on a canvas: whole device pixels per module (crisp edges for the scanner)
// and the standard quiet zone of 4 white modules on every side.
import qrcode from "./vendor/qrcode.js";

export const QUIET_ZONE = 4;

/**
 * mode: "Alphanumeric" for the CP1 code (Base45 is the QR alphanumeric alphabet),
 * "Byte" for VietQR. Level M, the smallest version that fits. Answers {version, modules}.
 */
export function drawQr(canvas, text, { mode = "Byte", level = "M", cssSize = 320 } = {}) {
  const code = qrcode(0, level);
  code.addData(text, mode);
  code.make();
  const count = code.getModuleCount();
  const modules = count + 2 * QUIET_ZONE;
  const ratio = window.devicePixelRatio || 1;
  const pixels = Math.max(1, Math.floor((cssSize * ratio) / modules));
  const side = pixels * modules;
  canvas.width = side;
  canvas.height = side;
  canvas.style.width = `${side / ratio}px`;
  canvas.style.height = `${side / ratio}px`;
  const g = canvas.getContext("2d");
  g.fillStyle = "#ffffff";
  g.fillRect(0, 0, side, side);
  g.fillStyle = "#000000";
  for (let row = 0; row < count; row += 1) {
    for (let col = 0; col < count; col += 1) {
      if (code.isDark(row, col)) {
        g.fillRect((col + QUIET_ZONE) * pixels, (row + QUIET_ZONE) * pixels, pixels, pixels);
      }
    }
  }
  return { version: (count - 17) / 4, modules: count };
}

"""The panel's stylesheet, shipped inside the panel so it looks the same in JupyterLab, Notebook 7 and VS Code.

Colours come from JupyterLab's theme variables (so dark themes work) with
fallbacks for front ends that do not define them.
"""

from __future__ import annotations

CSS = """
.nbmodels-panel {
  --nbm-fg: var(--jp-ui-font-color1, #1f2328);
  --nbm-muted: var(--jp-ui-font-color2, #59636e);
  --nbm-faint: var(--jp-ui-font-color3, #8c959f);
  --nbm-bg: var(--jp-layout-color1, #ffffff);
  --nbm-bg2: var(--jp-layout-color2, #f6f8fa);
  --nbm-track: var(--jp-layout-color2, #eceff2);
  --nbm-line: var(--jp-border-color2, #d8dee4);
  --nbm-accent: var(--jp-brand-color1, #1976d2);
  --nbm-accent-soft: var(--jp-brand-color3, #90caf9);
  --nbm-ok: var(--jp-success-color1, #2e7d32);
  --nbm-warn: var(--jp-warn-color1, #ef6c00);
  --nbm-error: var(--jp-error-color1, #d32f2f);
  --nbm-gpu: #2e9d6c;
  --nbm-gpu-soft: #a8dcc2;
  color: var(--nbm-fg);
  font-family: var(--jp-ui-font-family, system-ui, -apple-system, "Segoe UI", sans-serif);
  font-size: 13px;
  border: 1px solid var(--nbm-line);
  border-radius: 8px;
  background: var(--nbm-bg);
  padding: 10px 14px 12px 14px;
  max-width: 1100px;
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.06);
}
.nbmodels-panel .widget-html, .nbmodels-panel .widget-html-content { line-height: 1.35; height: auto; }
.nbmodels-panel .widget-html-content { white-space: normal; }
.nbm-brand { font-weight: 700; font-size: 15px; letter-spacing: 0.2px; }
.nbm-brand .nbm-logo { color: var(--nbm-accent); margin-right: 6px; }
.nbmodels-summary { color: var(--nbm-muted); }
.nbmodels-summary .widget-html-content { padding-top: 2px; }
.nbm-section { font-size: 11px; font-weight: 600; text-transform: uppercase; letter-spacing: 0.8px;
  color: var(--nbm-faint); margin: 10px 0 4px 0; }

.nbm-bar-row { display: grid; grid-template-columns: 64px minmax(160px, 1fr) minmax(260px, 1.4fr);
  align-items: center; column-gap: 12px; margin: 5px 0; }
.nbm-bar-label { font-weight: 600; }
.nbm-track { position: relative; display: flex; height: 12px; border-radius: 6px; overflow: hidden;
  background: var(--nbm-track); }
.nbm-seg { display: block; height: 100%; min-width: 0; }
.nbm-seg.nbm-nonzero { min-width: 2px; }
.nbm-seg-models { background: var(--nbm-accent); }
.nbm-seg-process { background: var(--nbm-accent-soft); }
.nbm-seg-other { background: #b8c0c8; }
.nbm-seg-allocated { background: var(--nbm-gpu); }
.nbm-seg-gpu-models { background: #1b6e4b; }
.nbm-seg-reserved { background: var(--nbm-gpu-soft); }
.nbm-seg-floor { background: repeating-linear-gradient(135deg, #9aa4ae 0 3px, #c9d0d6 3px 6px); }
.nbm-floor-mark { position: absolute; top: -2px; bottom: -2px; width: 2px; background: var(--nbm-warn); }
.nbm-bar-text { color: var(--nbm-muted); font-variant-numeric: tabular-nums; }
.nbm-bar-text b { color: var(--nbm-fg); font-weight: 600; }
.nbm-legend { color: var(--nbm-faint); font-size: 11px; margin-top: 2px; }
.nbm-legend i { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin: 0 4px 0 10px;
  vertical-align: -1px; }
.nbm-legend i:first-child { margin-left: 0; }

.nbm-cells { display: grid; align-items: center; column-gap: 10px;
  grid-template-columns: minmax(110px, 1.3fr) minmax(90px, 1.2fr) 64px 66px 62px 90px 50px 80px 40px 30px 74px; }
.nbm-c { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-variant-numeric: tabular-nums; }
.nbm-num { text-align: right; }
.nbm-head .nbm-c { font-size: 11px; font-weight: 600; color: var(--nbm-faint); text-transform: uppercase;
  letter-spacing: 0.5px; }
.nbmodels-header-row { border-bottom: 1px solid var(--nbm-line); padding-bottom: 3px; }
.nbmodels-row, .nbmodels-pending { border-bottom: 1px solid var(--nbm-line); padding: 3px 0; align-items: center; }
.nbmodels-row:hover { background: var(--nbm-bg2); }
.nbm-name b { font-weight: 600; }
.nbm-sub { display: block; font-size: 11px; color: var(--nbm-faint); }
.nbm-source { font-family: var(--jp-code-font-family, ui-monospace, monospace); font-size: 12px;
  color: var(--nbm-muted); }
.nbm-chip { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 11px; font-weight: 600;
  background: var(--nbm-track); color: var(--nbm-muted); }
.nbm-chip-cuda { background: var(--nbm-gpu-soft); color: #0f5132; }
.nbm-minibar { height: 3px; border-radius: 2px; background: var(--nbm-track); margin-top: 2px; }
.nbm-minibar i { display: block; height: 100%; border-radius: 2px; background: var(--nbm-accent); margin-left: auto; }
.nbm-empty { color: var(--nbm-faint); font-style: italic; padding: 8px 0; }
.nbm-pending-text { color: var(--nbm-muted); }
.nbmodels-held { border-bottom: 1px solid var(--nbm-line); padding: 3px 0; align-items: center;
  background: color-mix(in srgb, var(--nbm-warn) 6%, var(--nbm-bg)); }
.nbm-held .nbm-sub { color: var(--nbm-warn); }
.nbm-plan { white-space: normal; color: var(--nbm-fg); font-size: 12px; }
.nbmodels-panel .jupyter-button.nbmodels-force-free { color: white; background: var(--nbm-warn); border: none; }
.nbmodels-panel .jupyter-button.nbmodels-force-free:disabled { opacity: 0.5; }
.nbmodels-panel .nbmodels-output { max-height: 240px; overflow: auto; }

.nbmodels-actions { justify-content: flex-end; }
.nbmodels-panel .jupyter-button.nbm-small { height: 24px; line-height: 22px; font-size: 12px; padding: 0 8px;
  border-radius: 4px; margin: 0 0 0 4px; }
.nbmodels-panel .jupyter-button.nbmodels-unload { color: var(--nbm-error); background: transparent;
  border: 1px solid var(--nbm-line); }
.nbmodels-panel .jupyter-button.nbmodels-unload:hover { background: var(--nbm-error); color: white; }
.nbmodels-panel .jupyter-button.nbmodels-move { background: transparent; border: 1px solid var(--nbm-line); }
.nbmodels-panel .jupyter-button.nbm-icon { width: 30px; padding: 0; background: transparent; color: var(--nbm-muted); }
.nbmodels-panel .jupyter-button.nbmodels-load { border-radius: 4px; }
.nbmodels-panel .jupyter-button.nbmodels-cleanup { border-radius: 4px; background: transparent;
  color: var(--nbm-error); border: 1px solid var(--nbm-error); }
.nbmodels-panel .jupyter-button.nbmodels-cleanup:hover { background: var(--nbm-error); color: white; }
.nbm-pin { text-align: center; color: var(--nbm-accent); font-weight: 700; }
.nbmodels-panel .jupyter-button.nbmodels-pin { background: transparent; border: 1px solid var(--nbm-line); }
.nbmodels-panel .jupyter-button.nbmodels-pin.nbm-pinned { border-color: var(--nbm-accent); color: var(--nbm-accent); }
.nbm-unloads { color: var(--nbm-muted); font-size: 12px; }
.nbmodels-panel .nbm-form { margin-top: 2px; align-items: center; flex-wrap: wrap; }
.nbmodels-panel .nbm-form .widget-text input, .nbmodels-panel .nbm-form select { border-radius: 4px; }
.nbmodels-panel .nbm-busy::before { content: ""; display: inline-block; width: 10px; height: 10px;
  margin-right: 6px; vertical-align: -1px; border: 2px solid currentColor; border-right-color: transparent;
  border-radius: 50%; animation: nbm-spin 0.8s linear infinite; }
@keyframes nbm-spin { to { transform: rotate(360deg); } }

.nbm-status { margin-top: 10px; padding: 6px 10px; border-radius: 6px; background: var(--nbm-bg2);
  border-left: 3px solid var(--nbm-faint); color: var(--nbm-muted); overflow-wrap: anywhere; }
.nbm-status-ok { border-left-color: var(--nbm-ok); }
.nbm-status-warn { border-left-color: var(--nbm-warn); color: var(--nbm-fg); }
.nbm-status-error { border-left-color: var(--nbm-error); color: var(--nbm-error);
  background: color-mix(in srgb, var(--nbm-error) 8%, var(--nbm-bg)); }
.nbm-status-busy { border-left-color: var(--nbm-accent); }
.nbm-status .nbm-mark { font-weight: 700; margin-right: 6px; }
"""

#!/usr/bin/env node
// Typeset a built page's maths at build time, so the page ships SVG and no
// MathJax script.  Nikola runs it on every HTML file it writes (FILTERS in
// conf.py, through plugins/typeset_math); it also runs by hand:
//
//   node scripts/typeset_math.mjs FILE.html [FILE.html ...]
//
// docutils writes inline maths as <span class="math">\(...\)</span> and
// display maths as <div class="math">\[...\]</div> or, for the `math`
// directive, <div class="math">\begin{equation*}...\end{equation*}</div>.
// Each file's math elements go, in order, into one small MathJax document
// (MathJax 3.2.2 from the pinned mathjax-full package), with the settings the
// site used in the browser: TeX delimiters \( \) and \[ \], environments,
// tags "ams" (numbers, \label, \eqref, forward references included), the TeX
// packages the browser's tex-svg.js has or autoloads, SVG output with one
// global font cache per page (a glyph is drawn once and reused), assistive
// MathML beside each SVG for screen readers.  Only the contents of the math
// elements change; MathJax's SVG stylesheet goes before </head> and the font
// cache before </body>.  Nothing else in the page is touched.
//
// A file without math elements is left alone, without loading MathJax.  A
// file already typeset (it holds the MathJax stylesheet) is left alone too.
// Any TeX error (an undefined macro included: `noundefined` and `noerrors`
// are left out), any math element that does not become exactly one formula,
// fails: the script names the file, the formula and the error, leaves the file
// unchanged and exits with status 1.  Files are replaced atomically.

import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';

const require = createRequire(import.meta.url);

// A math element as docutils writes it: a span or div whose class list holds
// "math"; its contents are text (TeX with &, <, >, " escaped), no markup.
const MATH_ELEMENT = /<(span|div)((?:\s[^>]*?)?\sclass="(?:[^"]*\s)?math(?:\s[^"]*)?"[^>]*)>([\s\S]*?)<\/\1>/g;
const STYLE_ID = 'MJX-SVG-styles';
const CACHE_ID = 'MJX-SVG-global-cache';

// What the browser's tex-svg.js loads (base, ams, newcommand, configmacros)
// or autoloads on first use; not noundefined, noerrors or require.
const TEX_PACKAGES = [
  'base', 'ams', 'newcommand', 'configmacros', 'action', 'amscd', 'bbox', 'boldsymbol', 'braket',
  'bussproofs', 'cancel', 'color', 'enclose', 'extpfeil', 'html', 'mhchem', 'unicode', 'verb',
];
const PACKAGE_MODULES = {
  base: 'base/BaseConfiguration', ams: 'ams/AmsConfiguration', newcommand: 'newcommand/NewcommandConfiguration',
  configmacros: 'configmacros/ConfigMacrosConfiguration', action: 'action/ActionConfiguration',
  amscd: 'amscd/AmsCdConfiguration', bbox: 'bbox/BboxConfiguration', boldsymbol: 'boldsymbol/BoldsymbolConfiguration',
  braket: 'braket/BraketConfiguration', bussproofs: 'bussproofs/BussproofsConfiguration',
  cancel: 'cancel/CancelConfiguration', color: 'color/ColorConfiguration', enclose: 'enclose/EncloseConfiguration',
  extpfeil: 'extpfeil/ExtpfeilConfiguration', html: 'html/HtmlConfiguration', mhchem: 'mhchem/MhchemConfiguration',
  unicode: 'unicode/UnicodeConfiguration', verb: 'verb/VerbConfiguration',
};

class MathError extends Error {}

let MJ = null;  // MathJax's modules, loaded on the first page with maths

function loadMathJax() {
  if (MJ) return MJ;
  const js = 'mathjax-full/js/';
  try {
    require.resolve(js + 'mathjax.js');
  } catch (err) {
    throw new MathError('mathjax-full is not installed in node_modules: run make setup (npm ci)');
  }
  MJ = {
    mathjax: require(js + 'mathjax.js').mathjax,
    TeX: require(js + 'input/tex.js').TeX,
    SVG: require(js + 'output/svg.js').SVG,
    liteAdaptor: require(js + 'adaptors/liteAdaptor.js').liteAdaptor,
    RegisterHTMLHandler: require(js + 'handlers/html.js').RegisterHTMLHandler,
    AssistiveMmlHandler: require(js + 'a11y/assistive-mml.js').AssistiveMmlHandler,
  };
  for (const name of TEX_PACKAGES) require(js + 'input/tex/' + PACKAGE_MODULES[name] + '.js');
  MJ.adaptor = MJ.liteAdaptor();
  MJ.AssistiveMmlHandler(MJ.RegisterHTMLHandler(MJ.adaptor));
  return MJ;
}

function shorten(tex) {
  const text = tex.replace(/\s+/g, ' ').trim();
  return text.length > 120 ? text.slice(0, 117) + '...' : text;
}

// Typeset the contents of `elements` (the math elements' HTML, in page order)
// as one MathJax document; return {contents, styles, cache}.
function typesetElements(elements) {
  const {mathjax, TeX, SVG, adaptor} = loadMathJax();
  const errors = [];
  const tex = new TeX({
    packages: TEX_PACKAGES,
    inlineMath: [['\\(', '\\)']],
    displayMath: [['\\[', '\\]']],
    tags: 'ams',
    formatError: (jax, err) => { throw err; },  // to compileError below: no silent merror
  });
  const svg = new SVG({fontCache: 'global'});
  const body = elements.map((element, index) => `<div id="typeset-math-${index}">${element}</div>`).join('\n');
  const html = mathjax.document(`<!DOCTYPE html><html><head></head><body>${body}</body></html>`, {
    InputJax: tex,
    OutputJax: svg,
    enableAssistiveMml: true,
    compileError: (doc, math, err) => {
      errors.push(`TeX error in ${shorten(math.math)}: ${err.message}`);
      doc.compileError(math, err);
    },
    typesetError: (doc, math, err) => {
      errors.push(`SVG error in ${shorten(math.math)}: ${err.message}`);
      doc.typesetError(math, err);
    },
  });
  html.render();
  if (errors.length) throw new MathError(errors.join('\n'));

  const contents = elements.map((element, index) => {
    const wrapper = adaptor.elementById(adaptor.body(html.document), `typeset-math-${index}`);
    const mathElement = adaptor.firstChild(wrapper);
    const children = adaptor.childNodes(mathElement);
    const containers = children.filter((node) => adaptor.kind(node) === 'mjx-container');
    const blank = (node) => adaptor.kind(node) === '#text' && adaptor.value(node).trim() === '';
    const others = children.filter((node) => adaptor.kind(node) !== 'mjx-container' && !blank(node));
    if (containers.length !== 1 || others.length) {
      const problem = containers.length > 1 ? 'more than one formula'
        : containers.length ? 'text outside the formula' : 'no formula (missing delimiters, or unbalanced braces?)';
      throw new MathError(`${problem} in ${shorten(adaptor.textContent(mathElement))}`);
    }
    // An \eqref is a link inside the SVG, which assistive MathML hides from
    // screen readers (they read the reference in the MathML): keep it out of
    // the tab order too, as a focusable element must not be hidden (axe).
    for (const link of adaptor.tags(containers[0], 'a')) adaptor.setAttribute(link, 'tabindex', '-1');
    const typeset = adaptor.outerHTML(containers[0]);
    if (/data-mml-node="merror"|data-mjx-error/.test(typeset)) {
      throw new MathError(`MathJax error in ${shorten(element)}`);
    }
    return typeset;
  });
  const cache = adaptor.elementById(adaptor.body(html.document), CACHE_ID);
  return {
    contents,
    styles: adaptor.outerHTML(svg.styleSheet(html)),
    cache: cache ? adaptor.outerHTML(cache) : '',
  };
}

// The page with its maths typeset, or null when there is nothing to do.
export function typesetPage(page) {
  if (page.includes(`id="${STYLE_ID}"`)) return null;  // typeset already
  const matches = [...page.matchAll(MATH_ELEMENT)];
  if (!matches.length) return null;
  for (const match of matches) {
    if (match[3].includes('<')) throw new MathError(`unexpected markup inside a math element: ${shorten(match[0])}`);
  }
  const {contents, styles, cache} = typesetElements(matches.map((match) => match[0]));
  let result = '';
  let last = 0;
  matches.forEach((match, index) => {
    const start = match.index + match[0].indexOf('>') + 1;
    result += page.slice(last, start) + contents[index];
    last = match.index + match[0].length - `</${match[1]}>`.length;
  });
  result += page.slice(last);
  // The stylesheet goes before the (first) </head>, the font cache before the last </body>.
  const headEnd = result.search(/<\/head>/i);
  const bodyEnd = result.toLowerCase().lastIndexOf('</body>');
  if (headEnd < 0 || bodyEnd < headEnd) {
    throw new MathError('no </head> and </body> to put the styles and font cache before');
  }
  return result.slice(0, headEnd) + styles + '\n' + result.slice(headEnd, bodyEnd) + cache + '\n' +
    result.slice(bodyEnd);
}

function typesetFile(file) {
  const page = fs.readFileSync(file, 'utf8');
  if (!page.includes('math')) return false;  // quick exit before any parsing
  const result = typesetPage(page);
  if (result === null) return false;
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.typeset-${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, result);
    fs.chmodSync(temporary, fs.statSync(file).mode & 0o7777);
    fs.renameSync(temporary, file);
  } finally {
    fs.rmSync(temporary, {force: true});
  }
  return true;
}

function main(files) {
  if (!files.length) {
    console.error('usage: node scripts/typeset_math.mjs FILE.html [FILE.html ...]');
    return 2;
  }
  let status = 0;
  for (const file of files) {
    try {
      typesetFile(file);
    } catch (err) {
      if (!(err instanceof MathError)) throw err;
      console.error(`typeset_math: ${file}: ${err.message.replace(/\n/g, `\ntypeset_math: ${file}: `)}`);
      status = 1;
    }
  }
  return status;
}

if (import.meta.url === `file://${fs.realpathSync(process.argv[1])}`) {
  process.exitCode = main(process.argv.slice(2));
}

// The latent explorer: the main post's trained decoder, run in the page.
//
// Nothing loads until the reader presses "Open the latent explorer". Then the manifest and the
// decoder's weights (written by scripts/export_explorer.py from results/vae/vae.keras) come from
// this site's /explorer/ folder, and a point on the latent plane, dragged with the pointer or set
// with two sliders, is decoded here: Dense layers in float64 arithmetic on the float32 weights, and
// the sigmoid of the logits, the Bernoulli means, into a float32 array. A second mode walks the
// straight line between the codes (posterior means) of two test images.
//
// window.latentExplorer exposes the pieces the page tests read: open(), loaded, setPoint(z1, z2),
// point, output (the last decoded Bernoulli means, Float32Array of 784) and decode(z).
(function () {
  "use strict";

  var TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];  // matplotlib's, as in the figure
  var NEIGHBOURS = 20;  // the nearest test codes the description counts by digit
  var base = new URL("../../explorer/", document.currentScript.src);
  var api = { loaded: false, point: null, output: null };
  window.latentExplorer = api;

  function fetchFile(name, asJson) {
    return fetch(new URL(name, base)).then(function (response) {
      if (!response.ok) throw new Error(name + ": HTTP " + response.status);
      return asJson ? response.json() : response.arrayBuffer();
    });
  }

  // ---- The decoder: a stack of Dense layers -------------------------------------------------------

  function activate(name, x) {
    if (name === "relu") return x > 0 ? x : 0;
    if (name === "tanh") return Math.tanh(x);
    if (name === "sigmoid") return sigmoid(x);
    return x;  // linear
  }

  function sigmoid(x) {  // without overflow at either end
    if (x >= 0) return 1 / (1 + Math.exp(-x));
    var e = Math.exp(x);
    return e / (1 + e);
  }

  function makeDecoder(manifest, buffer) {
    var weights = new Float32Array(buffer);
    return function decode(z) {
      var h = Float64Array.from(z);
      manifest.layers.forEach(function (layer) {
        var rows = layer.kernel.shape[0], cols = layer.kernel.shape[1];
        var kernel = weights.subarray(layer.kernel.offset, layer.kernel.offset + rows * cols);
        var out = Float64Array.from(weights.subarray(layer.bias.offset, layer.bias.offset + cols));
        for (var i = 0; i < rows; i++) {
          var hi = h[i];
          if (hi === 0) continue;
          var row = i * cols;
          for (var j = 0; j < cols; j++) out[j] += hi * kernel[row + j];
        }
        for (var k = 0; k < cols; k++) out[k] = activate(layer.activation, out[k]);
        h = out;
      });
      var means = new Float32Array(h.length);
      for (var m = 0; m < h.length; m++) means[m] = sigmoid(h[m]);
      return means;
    };
  }

  // ---- The widget ---------------------------------------------------------------------------------

  function element(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function slider(id, label, min, max, step, value) {
    var input = element("input", { type: "range", id: id, min: min, max: max, step: step, value: value });
    return { input: input, row: element("div", { "class": "explorer-slider" }, [
      element("label", { "for": id }, [label]), input, element("output", { "for": id, id: id + "-value" })]) };
  }

  function build(container, manifest, decode, codes, labels) {
    var low = manifest.extent[0], high = manifest.extent[1], size = 320, zoom = 6;
    var side = manifest.image_shape[0];
    var plane = element("canvas", { width: size, height: size, "class": "explorer-plane", role: "img",
      "aria-label": "The latent plane from " + low + " to " + high + " in z1 and z2: the posterior means of the " +
        manifest.num_codes.toLocaleString("en") + " test images as dots coloured by digit, and the chosen point" });
    var image = element("canvas", { width: side * zoom, height: side * zoom, "class": "explorer-image", role: "img",
      "aria-label": "The decoded image" });
    var legend = element("ul", { "class": "explorer-legend", "aria-label": "Dot colours" });
    TAB10.forEach(function (colour, digit) {
      legend.appendChild(element("li", {}, [element("span", { "class": "explorer-swatch",
        style: "background-color: " + colour }), String(digit)]));
    });
    var z1 = slider("explorer-z1", "z\u2081", low, high, 0.01, 0);
    var z2 = slider("explorer-z2", "z\u2082", low, high, 0.01, 0);
    var pointMode = element("input", { type: "radio", name: "explorer-mode", id: "explorer-mode-point", value: "point" });
    var walkMode = element("input", { type: "radio", name: "explorer-mode", id: "explorer-mode-walk", value: "walk" });
    pointMode.checked = true;
    var from = element("select", { id: "explorer-from" }), to = element("select", { id: "explorer-to" });
    manifest.walk_examples.forEach(function (example) {
      var text = "a " + example.digit + " (test image " + example.index + ")";
      from.appendChild(element("option", { value: example.index }, [text]));
      to.appendChild(element("option", { value: example.index }, [text]));
    });
    from.value = String(manifest.walk_examples[1].index);
    to.value = String(manifest.walk_examples[7].index);
    var t = slider("explorer-t", "From the first (0) to the second (1)", 0, 1, 0.01, 0);
    var walk = element("fieldset", { "class": "explorer-walk", disabled: "" }, [
      element("legend", {}, ["The two test images"]),
      element("label", { "for": "explorer-from" }, ["First"]), from,
      element("label", { "for": "explorer-to" }, ["Second"]), to, t.row]);
    var description = element("p", { "class": "explorer-description", "aria-live": "polite" });
    container.replaceChildren(
      element("div", { "class": "explorer-panels" }, [
        element("figure", {}, [plane, element("figcaption", {}, ["Drag the point over the test codes."]), legend]),
        element("figure", {}, [image, element("figcaption", {}, ["What the decoder draws there (Bernoulli means)."])])]),
      element("fieldset", { "class": "explorer-mode" }, [
        element("legend", {}, ["Mode"]),
        pointMode, element("label", { "for": "explorer-mode-point" }, ["Choose a point"]),
        walkMode, element("label", { "for": "explorer-mode-walk" }, ["Walk between two test images"])]),
      element("div", { "class": "explorer-point" }, [z1.row, z2.row]),
      walk, description);

    // The test codes, drawn once.
    var dots = document.createElement("canvas");
    dots.width = dots.height = size;
    var toPixel = function (value) { return (value - low) / (high - low) * size; };
    var context = dots.getContext("2d");
    context.fillStyle = "#fff";
    context.fillRect(0, 0, size, size);
    for (var n = 0; n < manifest.num_codes; n++) {
      context.fillStyle = TAB10[labels[n]];
      context.fillRect(toPixel(codes[2 * n]) - 1, size - toPixel(codes[2 * n + 1]) - 1, 2, 2);
    }
    var small = document.createElement("canvas");
    small.width = small.height = side;

    function code(index) { return [codes[2 * index], codes[2 * index + 1]]; }

    function describe(z) {
      var nearest = [];
      for (var n = 0; n < manifest.num_codes; n++) {
        var d = Math.pow(codes[2 * n] - z[0], 2) + Math.pow(codes[2 * n + 1] - z[1], 2);
        if (nearest.length < NEIGHBOURS || d < nearest[nearest.length - 1][0]) {
          nearest.push([d, labels[n]]);
          nearest.sort(function (a, b) { return a[0] - b[0]; });
          if (nearest.length > NEIGHBOURS) nearest.pop();
        }
      }
      var counts = new Array(10).fill(0);
      nearest.forEach(function (pair) { counts[pair[1]] += 1; });
      var order = counts.map(function (count, digit) { return [count, digit]; })
        .filter(function (pair) { return pair[0] > 0; }).sort(function (a, b) { return b[0] - a[0]; });
      var parts = order.slice(0, 3).map(function (pair) {
        return pair[0] === 1 ? "1 is a " + pair[1] : pair[0] + " are " + pair[1] + "s";
      });
      return "z = (" + z[0].toFixed(2) + ", " + z[1].toFixed(2) + "). Of the " + NEIGHBOURS +
        " test images whose codes lie nearest, " + parts.join(", ") + ".";
    }

    function draw() {
      var z = api.point;
      var view = plane.getContext("2d");
      view.drawImage(dots, 0, 0);
      if (walkMode.checked) {
        var a = code(Number(from.value)), b = code(Number(to.value));
        view.strokeStyle = "#000";
        view.lineWidth = 1.5;
        view.beginPath();
        view.moveTo(toPixel(a[0]), size - toPixel(a[1]));
        view.lineTo(toPixel(b[0]), size - toPixel(b[1]));
        view.stroke();
      }
      view.lineWidth = 2;
      view.strokeStyle = "#000";
      view.fillStyle = "rgba(255, 255, 255, 0.7)";
      view.beginPath();
      view.arc(toPixel(z[0]), size - toPixel(z[1]), 7, 0, 2 * Math.PI);
      view.fill();
      view.stroke();
      var pixels = small.getContext("2d").createImageData(side, side);
      for (var p = 0; p < api.output.length; p++) {
        var grey = Math.round(255 * api.output[p]);  // Greys_r, as in the manifold figure: 1 is white
        pixels.data[4 * p] = pixels.data[4 * p + 1] = pixels.data[4 * p + 2] = grey;
        pixels.data[4 * p + 3] = 255;
      }
      small.getContext("2d").putImageData(pixels, 0, 0);
      var big = image.getContext("2d");
      big.imageSmoothingEnabled = false;
      big.drawImage(small, 0, 0, image.width, image.height);
      image.setAttribute("aria-label", "The decoded image at z = (" + z[0].toFixed(2) + ", " + z[1].toFixed(2) + ")");
      description.textContent = describe(z);
    }

    function clamp(value) { return Math.min(high, Math.max(low, value)); }

    api.setPoint = function (first, second) {
      api.point = [clamp(first), clamp(second)];
      api.output = decode(api.point);
      z1.input.value = api.point[0];
      z2.input.value = api.point[1];
      document.getElementById("explorer-z1-value").textContent = api.point[0].toFixed(2);
      document.getElementById("explorer-z2-value").textContent = api.point[1].toFixed(2);
      draw();
      return api.output;
    };

    function walkTo() {
      var a = code(Number(from.value)), b = code(Number(to.value)), s = Number(t.input.value);
      document.getElementById("explorer-t-value").textContent = s.toFixed(2);
      api.setPoint((1 - s) * a[0] + s * b[0], (1 - s) * a[1] + s * b[1]);
    }

    function setMode() {
      walk.disabled = !walkMode.checked;
      if (walkMode.checked) walkTo(); else draw();
    }

    function leaveWalk() {  // a point set by hand is off the walk's line
      if (walkMode.checked) { walkMode.checked = false; pointMode.checked = true; walk.disabled = true; }
    }

    function fromPointer(event) {
      var box = plane.getBoundingClientRect();
      var x = (event.clientX - box.left) / box.width, y = (event.clientY - box.top) / box.height;
      leaveWalk();
      api.setPoint(low + x * (high - low), high - y * (high - low));
    }

    var dragging = false;
    plane.addEventListener("pointerdown", function (event) {
      dragging = true;
      plane.setPointerCapture(event.pointerId);
      fromPointer(event);
    });
    plane.addEventListener("pointermove", function (event) { if (dragging) fromPointer(event); });
    plane.addEventListener("pointerup", function () { dragging = false; });
    plane.addEventListener("pointercancel", function () { dragging = false; });
    z1.input.addEventListener("input", function () { leaveWalk(); api.setPoint(Number(z1.input.value), api.point[1]); });
    z2.input.addEventListener("input", function () { leaveWalk(); api.setPoint(api.point[0], Number(z2.input.value)); });
    [from, to, t.input].forEach(function (control) { control.addEventListener("input", walkTo); });
    [pointMode, walkMode].forEach(function (control) { control.addEventListener("change", setMode); });
    document.getElementById("explorer-t-value").textContent = "0.00";
    api.decode = decode;
    api.setPoint(0, 0);
  }

  api.open = function () {
    var container = document.getElementById("latent-explorer");
    var button = container.querySelector("button");
    button.disabled = true;
    button.textContent = "Loading the decoder\u2026";
    return fetchFile("explorer.json", true).then(function (manifest) {
      return Promise.all(["decoder.bin", "codes.bin", "labels.bin"].map(function (name) {
        return fetchFile(name, false);
      })).then(function (buffers) {
        build(container, manifest, makeDecoder(manifest, buffers[0]), new Float32Array(buffers[1]),
              new Uint8Array(buffers[2]));
        api.loaded = true;
      });
    }).catch(function (error) {
      button.disabled = false;
      button.textContent = "Open the latent explorer";
      container.appendChild(element("p", { role: "alert" }, ["The explorer could not load: " + error.message]));
    });
  };

  document.addEventListener("DOMContentLoaded", function () {
    var container = document.getElementById("latent-explorer");
    if (container) container.querySelector("button").addEventListener("click", api.open);
  });
})();

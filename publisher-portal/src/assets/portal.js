// docfed portal: progressive enhancements, no build step. Every page works without this file.
(function () {
  'use strict';

  function human(n) {
    var units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    var u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return (u === 0 ? n : n.toFixed(1)) + ' ' + units[u];
  }

  // Upload forms: send with XMLHttpRequest to show a progress bar. The form's field order is
  // kept by FormData (text fields first, the file last), which the portal relies on to validate
  // the metadata before the bytes arrive.
  function enhanceUpload(form) {
    var box = form.querySelector('.upload-progress');
    var bar = box && box.querySelector('progress');
    var status = box && box.querySelector('.upload-status');
    var button = form.querySelector('button[type=submit]');
    var file = form.querySelector('input[type=file]');
    if (!box || !window.FormData || !window.XMLHttpRequest) return;
    form.addEventListener('submit', function (ev) {
      var max = Number(form.getAttribute('data-max-upload'));
      if (file && file.files.length && max && file.files[0].size > max) {
        ev.preventDefault();
        box.hidden = false;
        bar.hidden = true;
        status.className = 'upload-status error';
        status.textContent = 'This file is ' + human(file.files[0].size) +
          '; the largest upload allowed is ' + human(max) + '. Nothing was sent.';
        return;
      }
      if (!form.checkValidity()) return; // the browser shows what is missing
      ev.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open('POST', form.action);
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        bar.max = e.total;
        bar.value = e.loaded;
        status.textContent = 'Uploading: ' + Math.floor(100 * e.loaded / e.total) + '% (' +
          human(e.loaded) + ' of ' + human(e.total) + ')';
      };
      xhr.upload.onload = function () {
        status.textContent = 'Upload complete; waiting for the primary to confirm…';
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300 && xhr.responseURL) {
          // The portal answered with a redirect to the document page, which XHR followed.
          window.location.assign(xhr.responseURL);
          return;
        }
        // The form again with what is wrong, or an error page: show it as the page.
        document.open();
        document.write(xhr.responseText);
        document.close();
      };
      xhr.onerror = xhr.onabort = function () {
        button.disabled = false;
        status.className = 'upload-status error';
        status.textContent = 'The connection to the portal broke during the upload. ' +
          'Nothing was published; please retry.';
      };
      button.disabled = true;
      box.hidden = false;
      bar.hidden = false;
      status.className = 'upload-status';
      status.textContent = 'Starting upload…';
      xhr.send(new FormData(form));
    });
  }

  // The exact time of a <time datetime> in the browser's time zone, for the hover text (the
  // server writes it in UTC).
  function localTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return '';
    try {
      // timeStyle 'long' names the time zone (dateStyle/timeStyle cannot take timeZoneName).
      return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'long' });
    } catch (e) {
      return d.toString();
    }
  }

  function localiseTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      var local = localTime(t.getAttribute('datetime'));
      if (local) t.title = local;
    });
  }

  // Propagation table: poll the portal's JSON every 2 s while the document spreads, every 10 s
  // once every node holds the current version.
  function enhancePropagation(table) {
    var url = table.getAttribute('data-url');
    var body = table.querySelector('tbody');
    var summary = document.getElementById('propagation-summary');
    // The column names, for the stacked layout at phone width.
    var heads = Array.prototype.map.call(table.querySelectorAll('thead th'), function (th) {
      return th.textContent;
    });
    function render(p) {
      var rows = document.createDocumentFragment();
      p.rows.forEach(function (r) {
        var tr = document.createElement('tr');
        tr.className = 'state-' + r.state;
        // never innerHTML: node names come from the network
        var cells = [r.node, r.tier, r.version === null ? '–' : String(r.version)];
        function cell(i) {
          var td = document.createElement('td');
          td.setAttribute('data-label', heads[i]);
          return td;
        }
        cells.forEach(function (text, i) {
          var td = cell(i);
          td.textContent = text;
          tr.appendChild(td);
        });
        var holds = cell(3);
        if (r.holds === 'tombstone') {
          var badge = document.createElement('span');
          badge.className = 'badge warn';
          badge.textContent = 'tombstone';
          holds.appendChild(badge);
        } else {
          holds.textContent = r.holds;
        }
        tr.appendChild(holds);
        var at = cell(4);
        if (r.at) {
          var t = document.createElement('time');
          t.setAttribute('datetime', r.at);
          t.title = localTime(r.at) || r.at_exact;
          t.textContent = r.at_rel;
          at.appendChild(t);
        }
        tr.appendChild(at);
        var status = cell(5);
        status.textContent = r.label;
        tr.appendChild(status);
        rows.appendChild(tr);
      });
      body.replaceChildren(rows);
      if (summary.textContent !== p.summary) summary.textContent = p.summary;
    }
    function poll() {
      fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status)); })
        .then(function (p) { render(p); setTimeout(poll, p.complete ? 10000 : 2000); })
        .catch(function () {
          summary.textContent = 'Live status paused: the portal or the primaries did not answer; retrying.';
          setTimeout(poll, 5000);
        });
    }
    setTimeout(poll, 2000);
  }

  localiseTimes(document);
  document.querySelectorAll('form[data-upload]').forEach(enhanceUpload);
  var prop = document.getElementById('propagation');
  if (prop) enhancePropagation(prop);
  var summary = document.querySelector('.error-summary');
  if (summary) summary.focus();
})();

/* The workspace's one script: drag-and-drop upload with progress, live job progress, cell edits in place.
 * Every page works without it (plain forms); it only saves the clerk page reloads.
 * Loaded as a file (the Content Security Policy allows no inline script). */
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }

  function statusLabel(status) {
    return { valid: "校验通过", invalid: "校验未通过", enrolled: "申领成功", already_enrolled: "已办理过",
             rejected: "平台拒绝", failed: "发送失败" }[status] || status;
  }

  /* --- upload ------------------------------------------------------------------------------- */
  /* An answer that is not the workspace's own: the proxy in front refused the body (larger than its
     client_max_body_size) or had no answer from the server in time. Said in the clerk's terms. */
  function notOurAnswer(status, limit) {
    if (status === 413) { return "文件过大：单次上传最多 " + limit + "。请拆分后分别上传"; }
    if (status === 502 || status === 503 || status === 504) {
      return "上传失败：服务器暂时没有应答（" + status + "）。请稍后重新上传；一直失败请联系运维人员";
    }
    return "上传失败（" + status + "）：请刷新页面后重新上传；一直失败请联系运维人员";
  }

  function setUpUpload() {
    var form = $("#upload-form");
    if (!form) { return; }
    var input = $("#files"), zone = $("#dropzone"), chosen = $("#chosen");
    var bar = $("#upload-progress"), status = $("#upload-status");
    function show() {
      var names = [];
      for (var i = 0; i < input.files.length; i++) { names.push(input.files[i].name); }
      chosen.textContent = names.length ? "已选择：" + names.join("、") : "";
    }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("over"); });
    });
    // Files dropped anywhere on the page are taken as if dropped on the box: a register let go just
    // beside it was otherwise opened by the browser in place of the workspace (a CSV) or saved again.
    function carriesFiles(event) {
      var types = event.dataTransfer ? event.dataTransfer.types : null;
      return !!types && Array.prototype.indexOf.call(types, "Files") >= 0;
    }
    document.addEventListener("dragover", function (event) { if (carriesFiles(event)) { event.preventDefault(); } });
    document.addEventListener("drop", function (event) {
      if (!carriesFiles(event)) { return; }
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer.files.length) { input.files = event.dataTransfer.files; show(); }
    });
    form.addEventListener("submit", function (event) {
      if (!window.FormData || !input.files.length) { return; }
      event.preventDefault();
      var request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      bar.hidden = false;
      status.textContent = "正在上传…";
      $("#upload-button").disabled = true;
      request.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          bar.value = Math.round(100 * e.loaded / e.total);
          status.textContent = "正在上传 " + bar.value + "%";
        }
      });
      request.addEventListener("load", function () {
        var answer = {};
        try { answer = JSON.parse(request.responseText); } catch (ignored) { answer = {}; }
        if (request.status === 200 && answer.next) {
          if (answer.problems && answer.problems.length) {
            // Some files were taken, some not: say which were not before going anywhere.
            $("#upload-button").disabled = false;
            bar.hidden = true;
            status.className = "error";
            status.textContent = "已上传 " + answer.jobs.length + " 个文件；以下文件没有上传：" +
              answer.problems.join("；") + "。";
            var link = document.createElement("a");
            link.href = answer.next;
            link.id = "uploaded-link";
            link.textContent = "查看已上传的文件";
            status.appendChild(link);
            return;
          }
          status.textContent = "上传完成，正在检查…";
          window.location.assign(answer.next);
          return;
        }
        $("#upload-button").disabled = false;
        bar.hidden = true;
        status.textContent = answer.error || notOurAnswer(request.status, form.dataset.limit);
        status.className = "error";
      });
      request.addEventListener("error", function () {
        $("#upload-button").disabled = false;
        status.textContent = "上传中断：文件可能过大，或网络连接断开。";
        status.className = "error";
      });
      request.send(new FormData(form));
    });
  }

  /* --- job progress ----------------------------------------------------------------------------- */
  function setUpProgress() {
    var job = $("#job");
    if (!job || job.dataset.busy !== "true") { return; }
    var url = job.dataset.stateUrl;
    function seconds(n) {
      if (n === null || n === undefined) { return ""; }
      if (n < 60) { return "约 " + n + " 秒"; }
      return "约 " + Math.ceil(n / 60) + " 分钟";
    }
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (state) {
          if (!state.busy) { window.location.assign(window.location.pathname); return; }
          $("#state-label").textContent = state.label;
          $("#stage").textContent = state.stage || state.label;
          $("#state-message").textContent = state.message || "";
          var sending = state.sending || {};
          if (sending.total) {
            var done = sending.done || 0;
            $("#progress").value = Math.round(100 * done / sending.total);
            var parts = ["已发送 " + done + " / " + sending.total + " 人"];
            Object.keys(sending.counts || {}).forEach(function (status) {
              parts.push(statusLabel(status) + " " + sending.counts[status]);
            });
            if (sending.from_journal) { parts.push("据提交日志已办理 " + sending.from_journal); }
            // The first seconds' rate overstates: the limiter lets a second's worth through at once.
            if (sending.rate && sending.elapsed >= 3) {
              parts.push("速率 " + Math.min(sending.rate, sending.limit || sending.rate).toFixed(1) + " 人/秒");
            } else if (sending.limit) {
              parts.push("速率上限 " + sending.limit + " 人/秒");
            }
            if (sending.seconds_left !== undefined && sending.seconds_left !== null) {
              parts.push("剩余" + seconds(sending.seconds_left));
            }
            $("#sending").textContent = parts.join("，");
            $("#progress-text").textContent = $("#progress").value + "%";
          } else {
            $("#progress").value = Math.round(100 * (state.progress || 0));
            $("#progress-text").textContent = "";
          }
          window.setTimeout(poll, 1000);
        })
        .catch(function () {
          // The server restarting, or a proxy answering for it: say so rather than show a bar that froze.
          $("#state-message").textContent = "暂时连不上服务器，正在重新连接…；连上后本页会自动更新";
          window.setTimeout(poll, 3000);
        });
    }
    window.setTimeout(poll, 500);
  }

  /* --- the job list ---------------------------------------------------------------------------- */
  /* Uploads still being checked (or sent) follow their progress in place, so a clerk who dropped
     several files sees each one finish without reloading the page (which would also drop a choice of
     files under way). */
  function followJob(line) {
    var url = "/jobs/" + line.dataset.job + "/state";
    function show(state) {
      var label = line.querySelector(".state");
      // A check's own progress; a submission's is the share of its residents sent.
      var sending = state.sending || {};
      var share = state.state === "checking" ? state.progress : 0;
      if (state.state === "submitting" && sending.total) { share = (sending.done || 0) / sending.total; }
      var percent = Math.floor(100 * share);
      label.textContent = state.label + (percent >= 1 && percent < 100 ? " " + percent + "%" : "");
      label.className = "state state-" + state.state;
      line.querySelector(".job-rows").textContent = state.busy && !state.rows ? "—" : state.rows;
      var cell = line.querySelector(".job-counts");
      cell.textContent = "";
      Object.keys(state.counts || {}).forEach(function (status) {
        var badge = document.createElement("span");
        badge.className = "status status-" + status;
        badge.textContent = statusLabel(status) + " " + state.counts[status];
        cell.appendChild(badge);
        cell.appendChild(document.createTextNode(" "));
      });
    }
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }  // to the login page
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.json();
        })
        .then(function (state) {
          if (!state) { return; }
          show(state);
          if (state.busy) { window.setTimeout(poll, 2000); } else { delete line.dataset.busy; }
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    }
    window.setTimeout(poll, 1000);
  }

  function setUpJobList() {
    var table = $("#jobs");
    if (!table) { return; }
    table.querySelectorAll('tr[data-busy="true"]').forEach(followJob);
  }

  /* --- cell edits --------------------------------------------------------------------------------- */
  /* Every grid line of a row re-checked by an edit: its status, and each line's own faults now.
     A line whose column no longer has a fault says so and names what is left on the row; a fault
     on a column with no line of its own (a 10115 an edit gave another row) is named on every line. */
  function showRow(grid, rowId, status, label, faults, edited) {
    var lines = grid.querySelectorAll('tr[data-row="' + rowId + '"]');
    var errors = faults.filter(function (f) { return f.severity === "error"; });
    var shown = {};
    lines.forEach(function (line) { shown[line.dataset.source] = true; });
    function said(list) {
      return list.map(function (f) { return "[" + f.code + "] " + f.message; }).join("；");
    }
    var unshown = errors.filter(function (f) { return !shown[f.source]; });
    lines.forEach(function (line) {
      line.className = "status-" + status;
      line.querySelector(".row-status").textContent = label;
      var message = line.querySelector(".message"), code = line.querySelector(".code");
      var own = errors.filter(function (f) { return f.source === line.dataset.source; });
      var rest = errors.filter(function (f) { return f.source !== line.dataset.source; });
      if (status === "valid") {
        message.textContent = edited ? "已修改，本行已通过校验" : "本行已通过校验";
        code.textContent = "—";
      } else if (own.length) {
        message.textContent = own.map(function (f) { return f.message; }).join("；") +
          (unshown.length ? "（本行另有问题：" + said(unshown) + "）" : "");
        code.textContent = own.map(function (f) { return f.code; }).join("、");
      } else if (status === "invalid") {
        message.textContent = "此列已无问题；本行其他列仍有问题：" + said(rest);
        code.textContent = "—";
      }
    });
  }

  /* The counts by result code and the submit button's row count, as the edit left them. */
  function showTotals(answer) {
    var table = $("table.codes"), job = $("#job");
    if (table && answer.codes) {
      var body = table.querySelector("tbody");
      body.textContent = "";
      answer.codes.forEach(function (entry) {
        var line = document.createElement("tr");
        var code = document.createElement("td"), link = document.createElement("a");
        link.href = "/jobs/" + job.dataset.job + "?code=" + encodeURIComponent(entry.code);
        link.textContent = entry.code;
        code.appendChild(link);
        var description = document.createElement("td");
        description.textContent = entry.description;
        var count = document.createElement("td");
        count.className = "num";
        count.textContent = entry.n;
        line.appendChild(code); line.appendChild(description); line.appendChild(count);
        body.appendChild(line);
      });
      table.hidden = !answer.codes.length;
    }
    var shown = $("#shown-total");
    if (shown && typeof answer.shown === "number") { shown.textContent = answer.shown; }
    if (typeof answer.sendable !== "number" || !job) { return; }
    var submit = $("#submit-link");
    if (!submit && answer.sendable > 0) {
      var actions = $(".actions");
      if (!actions) { return; }
      submit = document.createElement("a");
      submit.className = "button primary";
      submit.id = "submit-link";
      submit.href = "/jobs/" + job.dataset.job + "/submit";
      actions.appendChild(submit);
    }
    if (submit) {
      submit.textContent = "提交 " + answer.sendable + " 行…";
      submit.hidden = answer.sendable === 0;
    }
  }

  function setUpEdits() {
    var grid = $("#grid");
    if (!grid) { return; }
    var sent = 0;  // edits sent so far: an answer overtaken by a later one must not undo what it said
    function failed(form, text) {
      var note = document.createElement("span");
      note.className = "edit-error";
      note.textContent = text;
      form.appendChild(note);
    }
    // A value typed but not saved (the session ended, the page's token went stale, the network dropped)
    // is kept for this tab until it is saved: the reload or the login the message asks for would
    // otherwise put the old value back in the cell without a word.
    var job = $("#job");
    function unsavedKey(row) {
      return "ehc-unsaved:" + job.dataset.job + ":" + row.dataset.row + ":" + row.dataset.source;
    }
    function keep(row, value) { try { window.sessionStorage.setItem(unsavedKey(row), value); } catch (ignored) {} }
    function forget(row) { try { window.sessionStorage.removeItem(unsavedKey(row)); } catch (ignored) {} }
    grid.querySelectorAll("form.edit").forEach(function (form) {
      var row = form.closest("tr"), input = form.querySelector('input[name="value"]'), typed = null;
      try { typed = window.sessionStorage.getItem(unsavedKey(row)); } catch (ignored) { typed = null; }
      if (typed === null || !input) { return; }
      if (input.value === typed) { forget(row); return; }
      input.value = typed;
      failed(form, "上次的修改没有保存，已放回这一格：请检查后按“保存”");
    });
    grid.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.classList.contains("edit")) { return; }
      event.preventDefault();
      var row = form.closest("tr");
      var typed = form.querySelector('input[name="value"]').value;
      var mine = ++sent;
      row.dataset.edit = String(mine);
      row.classList.add("saving");
      var old = row.querySelector(".edit-error");
      if (old) { old.remove(); }
      // The page's filters go along, so the answer can say how many of the faults shown are left.
      fetch(form.action + window.location.search, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { Accept: "application/json" }
      }).then(function (response) {
        return response.json().then(function (answer) { return { ok: response.ok, answer: answer }; });
      }).then(function (result) {
        if (row.dataset.edit !== String(mine)) { return; }  // this cell was edited again since
        row.classList.remove("saving");
        if (!result.ok) {
          keep(row, typed);
          failed(form, result.answer.error || "保存失败");
          return;
        }
        forget(row);
        var answer = result.answer;
        showRow(grid, answer.row_id, answer.status, answer.status_label, answer.faults, true);
        Object.keys(answer.others || {}).forEach(function (other) {
          var state = answer.others[other];
          showRow(grid, other, state.status, state.status_label, state.faults, false);
        });
        grid.querySelectorAll('tr[data-row="' + answer.row_id + '"]').forEach(function (line) {
          var input = line.querySelector('input[name="value"]');  // every line of the cell edited
          if (input && line.dataset.source === row.dataset.source) { input.value = answer.value; }
        });
        if (mine !== sent) { return; }  // a later edit's answer brings the totals
        showTotals(answer);
        var counts = $("#counts");
        if (counts && answer.counts) {
          counts.textContent = "";
          Object.keys(answer.counts).forEach(function (status) {
            if (!answer.counts[status]) { return; }
            var badge = document.createElement("span");
            badge.className = "status status-" + status;
            badge.dataset.status = status;
            badge.textContent = statusLabel(status) + " ";
            var number = document.createElement("b");
            number.textContent = answer.counts[status];
            badge.appendChild(number);
            counts.appendChild(badge);
          });
        }
      }).catch(function () {
        // The connection dropped, or a proxy answered with a page of its own: nothing was saved.
        if (row.dataset.edit !== String(mine)) { return; }
        row.classList.remove("saving");
        keep(row, typed);
        failed(form, "没有保存：网络中断或服务器没有应答。请检查网络后在这一格再按回车保存");
      });
    });
  }

  /* --- one submission per click ---------------------------------------------------------------- */
  function setUpSubmit() {
    var form = $("#submit-form");
    if (!form) { return; }
    form.addEventListener("submit", function () {
      var button = form.querySelector("button");
      window.setTimeout(function () { button.disabled = true; button.textContent = "正在提交…"; }, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSubmit();
    setUpUpload();
    setUpProgress();
    setUpJobList();
    setUpEdits();
  });
}());

// CityPass operator console. Plain JavaScript, no build step, no external resources.
// Everything that comes from events is inserted as text (never as HTML).
"use strict";

(() => {
  const TOKEN_KEY = "citypass.operator.token";
  const LANG_KEY = "citypass.operator.lang";
  const TAIL_KEPT = 200;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HANOI_TZ = "Asia/Ho_Chi_Minh";

  // Translations ---------------------------------------------------------------------------------

  const I18N = {
    vi: {
      "app.subtitle": "Trung tâm điều hành",
      "app.title": "CityPass · Trung tâm điều hành",
      "live.connecting": "Đang kết nối…",
      "live.on": "Trực tiếp",
      "live.off": "Mất kết nối, đang thử lại…",
      "auth.title": "Đăng nhập điều hành",
      "auth.hint": "Giám sát soát vé, bãi đỗ xe, doanh thu và cảnh báo theo thời gian thực.",
      "auth.username": "Tên đăng nhập",
      "auth.password": "Mật khẩu",
      "auth.submit": "Đăng nhập",
      "auth.logout": "Đăng xuất",
      "auth.failed": "Sai tên đăng nhập hoặc mật khẩu.",
      "auth.expired": "Phiên làm việc đã hết hạn, vui lòng đăng nhập lại.",
      "auth.error": "Không kết nối được máy chủ.",
      "auth.throttled": "Quá nhiều lần nhập sai mật khẩu. Thử lại sau {minutes} phút.",
      "role.admin": "quản trị",
      "role.viewer": "theo dõi",
      "kpi.validations": "Lượt soát vé hợp lệ hôm nay",
      "kpi.rejected": "bị từ chối hôm nay",
      "kpi.rate": "Lượt soát vé/phút, hợp lệ + từ chối (5 phút trọn gần nhất)",
      "kpi.rejectRate": "bị từ chối trong 5 phút đó",
      "kpi.revenueTransit": "Doanh thu vận tải hôm nay",
      "kpi.tickets": "vé phát hành hôm nay",
      "kpi.revenueParking": "Doanh thu bãi đỗ hôm nay",
      "kpi.payFailures": "thanh toán lỗi hôm nay (vé và gửi xe)",
      "kpi.gates": "Cổng trực tuyến / đang hoạt động",
      "kpi.gatesSilent": "mất tín hiệu",
      "kpi.gatesNever": "chưa từng gửi dữ liệu",
      "kpi.gatesProvisioned": "{count} cổng được cấp phát · {disabled} đã tắt",
      "kpi.gatesUnlisted": "{count} cổng gửi dữ liệu nhưng không có trong danh sách",
      "kpi.gatesNoList": "Chưa đọc được danh sách cổng: chỉ tính các cổng đã gửi dữ liệu",
      "kpi.alerts": "Cảnh báo chưa xử lý",
      "kpi.alertsToday": "phát sinh hôm nay",
      "chart.network": "Lượt soát vé mỗi phút — toàn mạng",
      "decision.accept": "Hợp lệ",
      "decision.reject": "Từ chối",
      "alerts.title": "Cảnh báo",
      "alerts.open": "Chưa xử lý",
      "alerts.all": "Tất cả",
      "alerts.none": "Không có cảnh báo.",
      "alerts.ack": "Xác nhận",
      "alerts.ackedBy": "Đã xác nhận bởi {who}",
      "stations.title": "Theo ga — mỗi phút (30 phút qua) và hôm nay",
      "stations.station": "Ga / tuyến",
      "stations.perMinute": "Mỗi phút",
      "stations.acceptedMinute": "Hợp lệ · phút này",
      "stations.acceptedToday": "Hợp lệ · hôm nay",
      "stations.rejectedMinute": "Từ chối · phút này",
      "stations.rejectedToday": "Từ chối · hôm nay",
      "stations.line": "Tuyến {line}",
      "stations.bus": "Xe buýt",
      "reasons.title": "Lý do từ chối — 3 giờ qua",
      "reasons.none": "Chưa có lượt bị từ chối.",
      "lots.title": "Bãi đỗ xe — chỗ trống",
      "lots.none": "Chưa có bãi đỗ nào.",
      "lots.free": "chỗ trống",
      "lots.of": "{occupied}/{capacity} đang gửi · cập nhật {time}",
      "lots.unreported": "chưa có dữ liệu công suất",
      "lots.places": "{capacity} chỗ",
      "lots.noList": "Chưa đọc được danh sách bãi đỗ: chỉ hiện các bãi đã gửi dữ liệu.",
      "lots.listError": "Danh sách bãi đỗ đọc lúc {time}; lần đọc gần nhất lỗi.",
      "revenue.title": "Doanh thu theo giờ — hôm nay",
      "revenue.transit": "Vận tải",
      "revenue.parking": "Bãi đỗ",
      "revenue.topups": "Nạp ví hôm nay",
      "revenue.suspense": "Treo (chưa khớp) hôm nay",
      "gates.title": "Thiết bị cổng",
      "gates.online": "Trực tuyến",
      "gates.silent": "Mất tín hiệu",
      "gates.never": "Chưa từng gửi",
      "gates.disabled": "Đã tắt",
      "gates.none": "Chưa có cổng nào được cấp phát hay gửi dữ liệu.",
      "gates.seen": "Lần cuối: {time} ({ago})",
      "gates.neverSeen": "Chưa nhận được lượt soát vé nào",
      "tail.title": "Sự kiện trực tiếp",
      "tail.ticket": "Mã vé",
      "tail.gate": "Mã cổng",
      "tail.plate": "Biển số",
      "tail.allTypes": "Mọi loại sự kiện",
      "tail.clear": "Xoá lọc",
      "tail.time": "Thời gian",
      "tail.event": "Sự kiện",
      "tail.where": "Địa điểm",
      "tail.ticketCol": "Vé / biển số",
      "tail.detail": "Chi tiết",
      "category.validation": "Soát vé",
      "category.ticket": "Vé",
      "category.payment": "Thanh toán",
      "category.parking": "Gửi xe",
      "category.occupancy": "Công suất bãi",
      "category.trip": "Chuyến đi",
      "category.alert": "Cảnh báo",
      "pipeline.title": "Sức khoẻ đường ống sự kiện",
      "pipeline.lag": "Độ trễ nhóm tiêu thụ",
      "pipeline.group": "Nhóm",
      "pipeline.records": "Bản ghi chờ",
      "pipeline.seconds": "Giây",
      "pipeline.partitions": "Phân vùng",
      "pipeline.services": "Outbox theo dịch vụ",
      "pipeline.service": "Dịch vụ",
      "pipeline.status": "Trạng thái",
      "pipeline.outbox": "Outbox",
      "pipeline.oldest": "Cũ nhất (s)",
      "pipeline.dead": "Thư chết",
      "pipeline.deadTopic": "Bản ghi trên ops.deadletter:",
      "pipeline.up": "hoạt động",
      "pipeline.down": "không phản hồi",
      "pipeline.checked": "Kiểm tra lúc {time}",
      "pipeline.kafka": "Kafka: {error}",
      "pipeline.none": "Chưa có số liệu.",
      "ago.now": "vừa xong",
      "ago.s": "{n} giây trước",
      "ago.m": "{n} phút trước",
      "ago.h": "{n} giờ trước",
      "cause.unknown_reference": "mã tham chiếu lạ",
      "cause.missing_reference": "thiếu mã tham chiếu",
      "cause.amount_mismatch": "sai số tiền",
      "cause.already_paid": "đã thanh toán trước đó",
      "cause.foreign_account": "tài khoản nhận không đúng",
      "vehicle.car": "ô tô",
      "vehicle.motorbike": "xe máy",
      "detail.fare": "cước {amount}",
      "detail.free": "còn {free}/{capacity} chỗ",
      "detail.offline": "ngoại tuyến",
      "detail.fee": "phí {amount}",
      "kind.charge": "thu cước",
      "kind.capture": "thu từ tạm giữ",
      "kind.payment": "thanh toán",
      "kind.refund": "hoàn tiền",
      "kind.topup": "nạp ví",
      "kind.hold": "tạm giữ",
      "kind.release": "giải phóng tạm giữ",
      "kind.suspense": "vào tài khoản treo",
      "source.transit": "vận tải",
      "source.parking": "bãi đỗ",
      "action.entry": "vào ga",
      "action.exit": "ra ga",
      "action.tap": "lên xe",
      "type.citypass.transit.validation.accepted.v1": "Soát vé hợp lệ",
      "type.citypass.transit.validation.rejected.v1": "Soát vé bị từ chối",
      "type.citypass.transit.trip.auto_closed.v1": "Tự đóng chuyến đi",
      "type.citypass.transit.ticket.issued.v1": "Phát hành vé",
      "type.citypass.transit.ticket.revoked.v1": "Thu hồi vé",
      "type.citypass.transit.device.registered.v1": "Đăng ký điện thoại",
      "type.citypass.transit.device.revoked.v1": "Thu hồi điện thoại",
      "type.citypass.transit.issuer_keys.changed.v1": "Đổi khoá phát hành",
      "type.citypass.transit.fare.unpaid.v1": "Cước chưa thu được",
      "type.citypass.transit.fare.settled.v1": "Đã thu cước nợ",
      "type.citypass.payments.transfer.posted.v1": "Giao dịch sổ cái",
      "type.citypass.payments.payment_request.paid.v1": "VietQR đã thanh toán",
      "type.citypass.parking.session.opened.v1": "Xe vào bãi",
      "type.citypass.parking.session.payment_required.v1": "Chờ thanh toán phí gửi xe",
      "type.citypass.parking.session.closed.v1": "Xe ra bãi",
      "type.citypass.parking.session.debt_settled.v1": "Đã thu nợ gửi xe",
      "type.citypass.parking.session.overridden.v1": "Điều chỉnh phiên gửi xe",
      "type.citypass.parking.session.disputed.v1": "Khiếu nại phí gửi xe",
      "type.citypass.parking.session.dispute_resolved.v1": "Đã giải quyết khiếu nại",
      "type.citypass.parking.occupancy.changed.v1": "Cập nhật chỗ trống",
      "type.citypass.parking.entry.refused.v1": "Từ chối xe vào (bãi đầy)",
      "type.citypass.transit.validation.duplicate_use.v1": "Cảnh báo: QR dùng ở nhiều cổng",
      "type.citypass.transit.validation.upload_too_late.v1": "Cảnh báo: cổng offline gửi quá muộn",
      "type.citypass.payments.bank_notification.unmatched.v1": "Cảnh báo: tiền treo",
      "type.citypass.ops.alert.raised.v1": "Cảnh báo",
      "type.citypass.ops.alert.acknowledged.v1": "Đã xác nhận cảnh báo",
      "reason.ok": "Hợp lệ",
      "reason.malformed": "Mã QR không hợp lệ",
      "reason.unknown_key": "Khoá phát hành lạ",
      "reason.bad_issuer_signature": "Chữ ký vé sai",
      "reason.bad_device_signature": "Chữ ký điện thoại sai",
      "reason.qr_expired": "Mã QR hết hạn",
      "reason.qr_not_yet_valid": "Lệch giờ điện thoại",
      "reason.replayed": "Mã QR đã dùng",
      "reason.revoked_ticket": "Vé bị thu hồi",
      "reason.revoked_device": "Điện thoại bị thu hồi",
      "reason.ticket_not_yet_valid": "Vé chưa có hiệu lực",
      "reason.ticket_expired": "Vé hết hạn",
      "reason.wrong_line": "Sai tuyến",
      "reason.no_rides_left": "Hết lượt",
      "reason.already_inside": "Đã quẹt vào (passback)",
      "reason.not_inside": "Chưa quẹt vào",
      "reason.insufficient_balance": "Số dư không đủ",
      "reason.gate_not_allowed": "Không dùng tại cổng này",
      "reason.unknown": "Không rõ",
      "rule.replay_burst": "Dồn dập mã QR dùng lại",
      "rule.impossible_travel": "Di chuyển bất khả thi",
      "rule.passback": "Cố quẹt vào lần nữa (passback)",
      "rule.gate_silent": "Cổng mất tín hiệu",
      "rule.lot_full": "Bãi đỗ đã đầy",
      "rule.payment_failures": "Thanh toán lỗi tăng đột biến",
      "rule.suspense": "Tiền vào tài khoản treo",
      "rule.offline_double_use": "Một mã QR dùng ở nhiều cổng ngoại tuyến",
      "rule.external": "Cảnh báo hệ thống",
      "body.replay_burst": "{count} lần quét mã đã dùng tại cổng {gate} trong {window_s} giây",
      "body.impossible_travel": "Vé {ticket}: {from_station} → {to_station} chỉ {seconds} giây (nhanh nhất {min_seconds} giây)",
      "body.passback": "Vé {ticket} cố vào khi đang ở trong ga {count} lần (cổng {gate})",
      "body.gate_silent": "Cổng {gate} không gửi dữ liệu {minutes} phút (lần cuối {last_seen})",
      "body.lot_full": "Bãi {lot} hết chỗ cho {vehicle}",
      "body.payment_failures": "{count} thanh toán lỗi trong {window_s} giây",
      "body.suspense": "{amount} chưa khớp yêu cầu thanh toán nào ({cause})",
      "body.offline_double_use": "Vé {ticket} được chấp nhận tại {gates}",
    },
    en: {
      "app.subtitle": "Operations centre",
      "app.title": "CityPass · Operations centre",
      "live.connecting": "Connecting…",
      "live.on": "Live",
      "live.off": "Disconnected, retrying…",
      "auth.title": "Operator sign-in",
      "auth.hint": "Watch validations, parking, revenue and alerts as they happen.",
      "auth.username": "Username",
      "auth.password": "Password",
      "auth.submit": "Sign in",
      "auth.logout": "Sign out",
      "auth.failed": "Wrong username or password.",
      "auth.expired": "Your session has expired; please sign in again.",
      "auth.error": "The server cannot be reached.",
      "auth.throttled": "Too many wrong passwords. Try again in {minutes} min.",
      "role.admin": "admin",
      "role.viewer": "viewer",
      "kpi.validations": "Accepted validations today",
      "kpi.rejected": "rejected today",
      "kpi.rate": "Validations per minute, accepted + rejected (last 5 full minutes)",
      "kpi.rejectRate": "rejected in those 5 minutes",
      "kpi.revenueTransit": "Transit revenue today",
      "kpi.tickets": "tickets issued today",
      "kpi.revenueParking": "Parking revenue today",
      "kpi.payFailures": "failed payments today (fares and parking)",
      "kpi.gates": "Gates online / in service",
      "kpi.gatesSilent": "silent",
      "kpi.gatesNever": "never reported",
      "kpi.gatesProvisioned": "{count} gates provisioned · {disabled} disabled",
      "kpi.gatesUnlisted": "{count} reporting gates not in the provisioned list",
      "kpi.gatesNoList": "Provisioned gates not read yet: counting gates that reported only",
      "kpi.alerts": "Open alerts",
      "kpi.alertsToday": "raised today",
      "chart.network": "Validations per minute — whole network",
      "decision.accept": "Accepted",
      "decision.reject": "Rejected",
      "alerts.title": "Alerts",
      "alerts.open": "Open",
      "alerts.all": "All",
      "alerts.none": "No alerts.",
      "alerts.ack": "Acknowledge",
      "alerts.ackedBy": "Acknowledged by {who}",
      "stations.title": "By station — per minute (last 30 min) and today",
      "stations.station": "Station / route",
      "stations.perMinute": "Per minute",
      "stations.acceptedMinute": "Accepted · this min",
      "stations.acceptedToday": "Accepted · today",
      "stations.rejectedMinute": "Rejected · this min",
      "stations.rejectedToday": "Rejected · today",
      "stations.line": "Line {line}",
      "stations.bus": "Bus",
      "reasons.title": "Rejection reasons — last 3 hours",
      "reasons.none": "No rejections yet.",
      "lots.title": "Parking — free spaces",
      "lots.none": "No parking lots.",
      "lots.free": "free",
      "lots.of": "{occupied}/{capacity} parked · updated {time}",
      "lots.unreported": "no occupancy report yet",
      "lots.places": "{capacity} places",
      "lots.noList": "Provisioned lots not read yet: showing lots that reported only.",
      "lots.listError": "Lot list read at {time}; the latest read failed.",
      "revenue.title": "Revenue by hour — today",
      "revenue.transit": "Transit",
      "revenue.parking": "Parking",
      "revenue.topups": "Wallet top-ups today",
      "revenue.suspense": "In suspense today",
      "gates.title": "Gate devices",
      "gates.online": "Online",
      "gates.silent": "Silent",
      "gates.never": "Never reported",
      "gates.disabled": "Disabled",
      "gates.none": "No gate provisioned or reporting.",
      "gates.seen": "Last seen {time} ({ago})",
      "gates.neverSeen": "No validation received",
      "tail.title": "Live events",
      "tail.ticket": "Ticket id",
      "tail.gate": "Gate id",
      "tail.plate": "Plate",
      "tail.allTypes": "All event types",
      "tail.clear": "Clear filters",
      "tail.time": "Time",
      "tail.event": "Event",
      "tail.where": "Where",
      "tail.ticketCol": "Ticket / plate",
      "tail.detail": "Detail",
      "category.validation": "Validations",
      "category.ticket": "Tickets",
      "category.payment": "Payments",
      "category.parking": "Parking sessions",
      "category.occupancy": "Lot occupancy",
      "category.trip": "Trips",
      "category.alert": "Alerts",
      "pipeline.title": "Event pipeline health",
      "pipeline.lag": "Consumer group lag",
      "pipeline.group": "Group",
      "pipeline.records": "Records behind",
      "pipeline.seconds": "Seconds",
      "pipeline.partitions": "Partitions",
      "pipeline.services": "Outbox per service",
      "pipeline.service": "Service",
      "pipeline.status": "Status",
      "pipeline.outbox": "Outbox",
      "pipeline.oldest": "Oldest (s)",
      "pipeline.dead": "Dead letters",
      "pipeline.deadTopic": "Records on ops.deadletter:",
      "pipeline.up": "up",
      "pipeline.down": "not answering",
      "pipeline.checked": "Checked at {time}",
      "pipeline.kafka": "Kafka: {error}",
      "pipeline.none": "No figures yet.",
      "ago.now": "just now",
      "ago.s": "{n} s ago",
      "ago.m": "{n} min ago",
      "ago.h": "{n} h ago",
      "cause.unknown_reference": "unknown reference",
      "cause.missing_reference": "no reference",
      "cause.amount_mismatch": "wrong amount",
      "cause.already_paid": "already paid",
      "cause.foreign_account": "wrong receiving account",
      "vehicle.car": "cars",
      "vehicle.motorbike": "motorbikes",
      "detail.fare": "fare {amount}",
      "detail.free": "{free}/{capacity} free",
      "detail.offline": "offline",
      "detail.fee": "fee {amount}",
      "kind.charge": "charge",
      "kind.capture": "capture",
      "kind.payment": "payment",
      "kind.refund": "refund",
      "kind.topup": "top-up",
      "kind.hold": "hold",
      "kind.release": "hold released",
      "kind.suspense": "to suspense",
      "source.transit": "transit",
      "source.parking": "parking",
      "action.entry": "entry",
      "action.exit": "exit",
      "action.tap": "boarding",
      "type.citypass.transit.validation.accepted.v1": "Validation accepted",
      "type.citypass.transit.validation.rejected.v1": "Validation rejected",
      "type.citypass.transit.trip.auto_closed.v1": "Trip auto-closed",
      "type.citypass.transit.ticket.issued.v1": "Ticket issued",
      "type.citypass.transit.ticket.revoked.v1": "Ticket revoked",
      "type.citypass.transit.device.registered.v1": "Phone registered",
      "type.citypass.transit.device.revoked.v1": "Phone revoked",
      "type.citypass.transit.issuer_keys.changed.v1": "Issuer keys changed",
      "type.citypass.transit.fare.unpaid.v1": "Fare unpaid",
      "type.citypass.transit.fare.settled.v1": "Unpaid fares settled",
      "type.citypass.payments.transfer.posted.v1": "Ledger transfer",
      "type.citypass.payments.payment_request.paid.v1": "VietQR paid",
      "type.citypass.parking.session.opened.v1": "Vehicle entered",
      "type.citypass.parking.session.payment_required.v1": "Parking fee due",
      "type.citypass.parking.session.closed.v1": "Vehicle left",
      "type.citypass.parking.session.debt_settled.v1": "Parking debt settled",
      "type.citypass.parking.session.overridden.v1": "Session overridden",
      "type.citypass.parking.session.disputed.v1": "Fee disputed",
      "type.citypass.parking.session.dispute_resolved.v1": "Dispute resolved",
      "type.citypass.parking.occupancy.changed.v1": "Occupancy",
      "type.citypass.parking.entry.refused.v1": "Entry refused (lot full)",
      "type.citypass.transit.validation.duplicate_use.v1": "Alert: QR used at several gates",
      "type.citypass.transit.validation.upload_too_late.v1": "Alert: offline gate uploaded too late",
      "type.citypass.payments.bank_notification.unmatched.v1": "Alert: money in suspense",
      "type.citypass.ops.alert.raised.v1": "Alert",
      "type.citypass.ops.alert.acknowledged.v1": "Alert acknowledged",
      "reason.ok": "Accepted",
      "reason.malformed": "Invalid QR code",
      "reason.unknown_key": "Unknown issuer key",
      "reason.bad_issuer_signature": "Bad ticket signature",
      "reason.bad_device_signature": "Bad phone signature",
      "reason.qr_expired": "QR expired",
      "reason.qr_not_yet_valid": "Phone clock ahead",
      "reason.replayed": "QR already used",
      "reason.revoked_ticket": "Ticket revoked",
      "reason.revoked_device": "Phone revoked",
      "reason.ticket_not_yet_valid": "Ticket not yet valid",
      "reason.ticket_expired": "Ticket expired",
      "reason.wrong_line": "Wrong line",
      "reason.no_rides_left": "No rides left",
      "reason.already_inside": "Already inside (passback)",
      "reason.not_inside": "No entry recorded",
      "reason.insufficient_balance": "Insufficient balance",
      "reason.gate_not_allowed": "Not valid at this gate",
      "reason.unknown": "Unknown",
      "rule.replay_burst": "Burst of replayed QR codes",
      "rule.impossible_travel": "Impossible travel",
      "rule.passback": "Passback attempt",
      "rule.gate_silent": "Gate silent",
      "rule.lot_full": "Lot full",
      "rule.payment_failures": "Spike in payment failures",
      "rule.suspense": "Money in suspense",
      "rule.offline_double_use": "One QR used at several offline gates",
      "rule.external": "System alert",
      "body.replay_burst": "{count} replayed codes at gate {gate} within {window_s} s",
      "body.impossible_travel": "Ticket {ticket}: {from_station} → {to_station} in {seconds} s (fastest {min_seconds} s)",
      "body.passback": "Ticket {ticket} tried to enter while inside {count} times (gate {gate})",
      "body.gate_silent": "Gate {gate} silent for {minutes} min (last seen {last_seen})",
      "body.lot_full": "Lot {lot} has no space left for {vehicle}",
      "body.payment_failures": "{count} failed payments within {window_s} s",
      "body.suspense": "{amount} matched no payment request ({cause})",
      "body.offline_double_use": "Ticket {ticket} accepted at {gates}",
    },
  };
  const REASON_COLORS = [
    "#dc2626", "#f59e0b", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
    "#ea580c", "#2563eb", "#475569", "#14b8a6", "#a16207", "#9333ea",
  ];

  const state = {
    lang: localStorage.getItem(LANG_KEY) === "en" ? "en" : "vi",
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    board: null,
    alerts: new Map(),
    alertFilter: "open",
    tail: [],
    filters: { ticket: "", gate: "", plate: "", type: "" },
    lastEventId: null,
    source: null,
    reconnect: null,
    pipelineTimer: null,
    flashPlaces: new Set(),
  };

  const $ = (id) => document.getElementById(id);

  function t(key, params) {
    const table = I18N[state.lang];
    let text = table[key] ?? I18N.en[key] ?? key;
    if (params) {
      text = text.replace(/\{(\w+)\}/g, (_, name) => (params[name] ?? params[name] === 0 ? String(params[name]) : "–"));
    }
    return text;
  }
  const locale = () => (state.lang === "vi" ? "vi-VN" : "en-GB");
  const num = (n) => new Intl.NumberFormat(locale()).format(n ?? 0);
  const vnd = (n) => `${num(n)} ₫`;
  function compactVnd(n) {
    if (Math.abs(n) >= 1e9) return `${(n / 1e9).toLocaleString(locale(), { maximumFractionDigits: 1 })}${state.lang === "vi" ? " tỷ" : "B"}`;
    if (Math.abs(n) >= 1e6) return `${(n / 1e6).toLocaleString(locale(), { maximumFractionDigits: 1 })}${state.lang === "vi" ? " tr" : "M"}`;
    if (Math.abs(n) >= 1e3) return `${(n / 1e3).toLocaleString(locale(), { maximumFractionDigits: 0 })}k`;
    return String(n);
  }
  const clock = (iso, seconds = true) => new Date(iso).toLocaleTimeString(locale(), {
    timeZone: HANOI_TZ, hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}), hour12: false,
  });
  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 5) return t("ago.now");
    if (s < 60) return t("ago.s", { n: s });
    if (s < 3600) return t("ago.m", { n: Math.floor(s / 60) });
    return t("ago.h", { n: Math.floor(s / 3600) });
  }
  const short = (id) => (id && id.length > 13 ? `${id.slice(0, 8)}…` : id || "");

  // DOM helpers -----------------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const titled = (el, text) => { el.append(s("title", {}, text)); return el; };

  function applyStaticText() {
    document.documentElement.lang = state.lang;
    document.title = t("app.title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const button of document.querySelectorAll(".lang button")) {
      button.classList.toggle("active", button.dataset.lang === state.lang);
    }
  }

  // API -----------------------------------------------------------------------------------------

  class SessionExpired extends Error {}

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401 && path !== "/v1/login") {
      signOut("auth.expired");
      throw new SessionExpired();
    }
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    if (!response.ok) {
      const error = new Error(body?.detail || response.statusText);
      error.status = response.status;
      error.retryAfter = Number(response.headers.get("retry-after")) || null;
      throw error;
    }
    return body;
  }

  // Sign-in -------------------------------------------------------------------------------------

  function showLogin(messageKey, params) {
    $("app-view").hidden = true;
    $("who").hidden = true;
    $("live").hidden = true;
    $("login-view").hidden = false;
    const error = $("login-error");
    error.hidden = !messageKey;
    if (messageKey) error.textContent = t(messageKey, params);
    $("username").focus();
  }

  function signOut(messageKey) {
    state.token = null;
    state.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    closeStream();
    clearInterval(state.pipelineTimer);
    showLogin(messageKey);
  }

  async function onLogin(event) {
    event.preventDefault();
    const submit = $("login-submit");
    submit.disabled = true;
    try {
      const session = await api("/v1/login", {
        method: "POST",
        body: JSON.stringify({ username: $("username").value.trim(), password: $("password").value }),
      });
      state.token = session.access_token;
      sessionStorage.setItem(TOKEN_KEY, state.token);
      $("password").value = "";
      await start();
    } catch (error) {
      if (error.status === 429) {
        showLogin("auth.throttled", { minutes: Math.max(1, Math.ceil((error.retryAfter || 60) / 60)) });
      } else {
        showLogin(error.status === 401 || error.status === 422 ? "auth.failed" : "auth.error");
      }
    } finally {
      submit.disabled = false;
    }
  }

  async function start() {
    state.me = await api("/v1/me");
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("who").hidden = false;
    $("live").hidden = false;
    $("who-name").textContent = state.me.username;
    $("who-role").textContent = t(`role.${state.me.role}`);
    const [board, alerts, tail] = await Promise.all([
      api("/v1/dashboard"),
      api("/v1/alerts?limit=100"),
      api(`/v1/events?${tailQuery()}`),
    ]);
    state.alerts = new Map(alerts.map((a) => [a.alert_id, a]));
    state.tail = tail;
    state.lastEventId = null;
    renderBoard(board);
    renderAlerts();
    renderTail();
    await refreshPipeline();
    clearInterval(state.pipelineTimer);
    state.pipelineTimer = setInterval(() => refreshPipeline().catch(() => {}), 10000);
    openStream();
  }

  // The live stream -------------------------------------------------------------------------------

  function setLive(status) {
    const live = $("live");
    live.classList.toggle("on", status === "on");
    live.classList.toggle("off", status === "off");
    $("live-label").textContent = t(`live.${status === "on" ? "on" : status === "off" ? "off" : "connecting"}`);
    live.dataset.status = status;
  }

  function closeStream() {
    if (state.source) state.source.close();
    state.source = null;
    clearTimeout(state.reconnect);
  }

  async function openStream() {
    closeStream();
    setLive("connecting");
    let ticket;
    try {
      ticket = await api("/v1/stream-tickets", { method: "POST" });
    } catch (error) {
      if (error instanceof SessionExpired) return;
      setLive("off");
      state.reconnect = setTimeout(openStream, 3000);
      return;
    }
    const params = new URLSearchParams({ ticket: ticket.ticket });
    if (state.lastEventId) params.set("last_event_id", state.lastEventId);
    const source = new EventSource(`/v1/stream?${params}`);
    state.source = source;
    source.onopen = () => setLive("on");
    source.addEventListener("summary", (event) => {
      renderBoard(JSON.parse(event.data));
      $("live-time").textContent = clock(new Date().toISOString());
    });
    source.addEventListener("tail", (event) => {
      state.lastEventId = event.lastEventId;
      onTailEntry({ ...JSON.parse(event.data), stream_id: event.lastEventId });
    });
    source.addEventListener("expired", () => signOut("auth.expired"));
    source.onerror = () => {
      // A ticket opens one stream only: reconnect with a new ticket, resuming where we were.
      source.close();
      if (state.source !== source) return;
      setLive("off");
      state.reconnect = setTimeout(openStream, 2000);
    };
  }

  function onTailEntry(entry) {
    if (entry.alert) state.alerts.set(entry.alert.alert_id, entry.alert);
    if (entry.type === "citypass.ops.alert.acknowledged.v1" && state.alerts.has(entry.alert_id)) {
      const alert = state.alerts.get(entry.alert_id);
      if (!alert.acknowledged_at) {
        state.alerts.set(entry.alert_id, { ...alert, acknowledged_at: entry.at, acknowledged_by: entry.acknowledged_by });
      }
    }
    if (entry.alert || entry.type === "citypass.ops.alert.acknowledged.v1") renderAlerts();
    if (entry.category === "validation") {
      const place = entry.station || (entry.route ? `bus:${entry.route}` : null);
      if (place) state.flashPlaces.add(place);
    }
    if (!matches(entry)) return;
    if (state.tail.some((e) => e.id === entry.id)) return;
    state.tail.unshift(entry);
    state.tail.length = Math.min(state.tail.length, TAIL_KEPT);
    const body = $("tail").tBodies[0];
    body.prepend(tailRow(entry, true));
    while (body.rows.length > TAIL_KEPT) body.deleteRow(-1);
  }

  // Dashboard -----------------------------------------------------------------------------------

  function placeName(place) {
    const station = state.board?.stations.find((st) => st.place === place);
    return station ? station.name : place;
  }

  function renderBoard(board) {
    state.board = board;
    const today = board.today;
    $("kpi-accepted").textContent = num(today.accepted);
    $("kpi-rejected").textContent = num(today.rejected);
    const recent = board.network.slice(-6, -1); // the five minutes before the current one
    const recentTotal = recent.reduce((sum, m) => sum + m.accepted + m.rejected, 0);
    const recentRejected = recent.reduce((sum, m) => sum + m.rejected, 0);
    $("kpi-rate").textContent = num(Math.round(recentTotal / 5));
    $("kpi-reject-rate").textContent = `${recentTotal ? ((recentRejected / recentTotal) * 100).toLocaleString(locale(), { maximumFractionDigits: 1 }) : 0}%`;
    $("kpi-rate").title = `${num(recentTotal)} / 5`;
    $("kpi-rev-transit").textContent = vnd(today.revenue_transit);
    $("kpi-rev-parking").textContent = vnd(today.revenue_parking);
    $("kpi-tickets").textContent = num(today.tickets_issued);
    $("kpi-payfail").textContent = num(today.payment_failures);
    const gs = board.gate_summary;
    $("kpi-gates").textContent = `${num(gs.online)}/${num(gs.online + gs.silent + gs.never_reported)}`;
    $("kpi-gates-silent").textContent = num(gs.silent);
    $("kpi-gates-never").textContent = num(gs.never_reported);
    $("kpi-gates-note").textContent = [
      gs.provisioned === null ? t("kpi.gatesNoList") : t("kpi.gatesProvisioned", { count: num(gs.provisioned), disabled: num(gs.disabled) }),
      gs.not_provisioned ? t("kpi.gatesUnlisted", { count: num(gs.not_provisioned) }) : "",
    ].filter(Boolean).join(" · ");
    $("kpi-gates-note").title = gs.list_error || "";
    $("kpi-alerts").textContent = num(board.open_alerts);
    $("kpi-alerts-today").textContent = num(today.alerts);
    $("kpi-alerts-card").classList.toggle("alarm", board.open_alerts > 0);
    $("money-topups").textContent = vnd(today.topups);
    $("money-suspense").textContent = vnd(today.suspense);
    renderNetworkChart(board);
    renderStations(board);
    renderReasons(board);
    renderLots(board);
    renderRevenue(board);
    renderGates(board);
    state.flashPlaces.clear();
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return value;
  }

  function barChart({ width, height, labels, series, colors, yFormat = num, labelEvery = 5, tooltip }) {
    const pad = { left: 40, right: 8, top: 8, bottom: 20 };
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const totals = labels.map((_, i) => series.reduce((sum, values) => sum + Math.max(0, values[i] || 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    for (let k = 0; k <= 4; k += 1) {
      const y = pad.top + innerH - (innerH * k) / 4;
      svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, stroke: "#e2e8f0", "stroke-width": 1 }));
      svg.append(s("text", { x: pad.left - 6, y: y + 3, "text-anchor": "end" }, yFormat((max * k) / 4)));
    }
    const slot = innerW / labels.length;
    const barW = Math.max(2, slot * 0.72);
    labels.forEach((label, i) => {
      let y = pad.top + innerH;
      const x = pad.left + i * slot + (slot - barW) / 2;
      const group = s("g", {});
      series.forEach((values, k) => {
        const v = Math.max(0, values[i] || 0);
        if (!v) return;
        const barH = (innerH * v) / max;
        y -= barH;
        group.append(s("rect", { x, y, width: barW, height: Math.max(barH, 0.5), rx: 1.5, fill: colors[k] }));
      });
      if (tooltip) titled(group, tooltip(i));
      group.append(s("rect", { x: pad.left + i * slot, y: pad.top, width: slot, height: innerH, fill: "transparent" }));
      svg.append(group);
      if (i % labelEvery === 0 || i === labels.length - 1) {
        svg.append(s("text", { x: x + barW / 2, y: height - 5, "text-anchor": "middle" }, label));
      }
    });
    return svg;
  }

  function renderNetworkChart(board) {
    const labels = board.minutes.map((m) => clock(m, false));
    const chart = barChart({
      width: 860, height: 190, labels,
      series: [board.network.map((m) => m.accepted), board.network.map((m) => m.rejected)],
      colors: ["#16a34a", "#dc2626"],
      tooltip: (i) => `${labels[i]} · ${t("decision.accept")}: ${num(board.network[i].accepted)} · ${t("decision.reject")}: ${num(board.network[i].rejected)}`,
    });
    $("chart-network").replaceChildren(chart);
  }

  function sparkline(perMinute, max) {
    const width = 300;
    const height = 26;
    const slot = width / perMinute.length;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "spark" });
    svg.append(s("line", { x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: "#e2e8f0" }));
    perMinute.forEach((m, i) => {
      const x = i * slot + slot * 0.15;
      const w = slot * 0.7;
      const okH = (height - 2) * (m.accepted / max);
      const badH = (height - 2) * (m.rejected / max);
      if (m.accepted) svg.append(s("rect", { x, y: height - okH, width: w, height: okH, fill: "#16a34a", rx: 1 }));
      if (m.rejected) svg.append(s("rect", { x, y: height - okH - badH, width: w, height: badH, fill: "#dc2626", rx: 1 }));
    });
    return svg;
  }

  function lineBadge(station) {
    if (station.line) return h("span", { class: `badge l${station.line}` }, station.line);
    return h("span", { class: "badge bus" }, "BUS");
  }

  function renderStations(board) {
    const body = $("stations");
    const max = Math.max(1, ...board.stations.flatMap((st) => st.per_minute.map((m) => m.accepted + m.rejected)));
    const rows = [];
    let group = null;
    for (const station of board.stations) {
      const groupName = station.line ? t("stations.line", { line: station.line }) : t("stations.bus");
      if (groupName !== group) {
        group = groupName;
        rows.push(h("tr", { class: "line-head" }, h("td", { colspan: 6 }, groupName)));
      }
      const last = station.per_minute[station.per_minute.length - 1] || { accepted: 0, rejected: 0 };
      const row = h(
        "tr",
        { dataset: { place: station.place }, class: state.flashPlaces.has(station.place) ? "flash" : null },
        h("td", { class: "name" }, lineBadge(station), " ", station.name, h("span", { class: "code" }, station.place.startsWith("bus:") ? "" : station.place)),
        h("td", { class: "spark" }, sparkline(station.per_minute, max)),
        h("td", { class: "num count-minute-accepted" }, num(last.accepted)),
        h("td", { class: "num count-today-accepted" }, num(station.today.accepted)),
        h("td", { class: "num rej count-minute-rejected" }, num(last.rejected)),
        h("td", { class: "num rej count-today-rejected" }, num(station.today.rejected)),
      );
      rows.push(row);
    }
    // Which minute and which day the columns count (the last minute is the current one).
    body.dataset.minute = board.minutes[board.minutes.length - 1];
    body.dataset.day = board.today.day;
    body.replaceChildren(...rows);
  }

  function renderReasons(board) {
    const colors = new Map(board.reasons.map((r, i) => [r.reason, REASON_COLORS[i % REASON_COLORS.length]]));
    const empty = board.reasons.length === 0;
    $("reasons-empty").hidden = !empty;
    $("chart-reasons").hidden = empty;
    $("reasons-legend").hidden = empty;
    if (empty) return;
    const labels = board.reason_buckets.map((b) => clock(b, false));
    $("chart-reasons").replaceChildren(barChart({
      width: 420, height: 170, labels,
      series: board.reasons.map((r) => r.counts),
      colors: board.reasons.map((r) => colors.get(r.reason)),
      labelEvery: 6,
      tooltip: (i) => [labels[i], ...board.reasons.filter((r) => r.counts[i]).map((r) => `${t(`reason.${r.reason}`)}: ${r.counts[i]}`)].join("\n"),
    }));
    $("reasons-legend").replaceChildren(...board.reasons.slice(0, 8).map((r) => h(
      "li", {},
      h("span", { class: "sw", style: null, dataset: { reason: r.reason } }),
      t(`reason.${r.reason}`),
      h("span", { class: "n" }, num(r.counts.reduce((sum, n) => sum + n, 0))),
    )));
    for (const swatch of $("reasons-legend").querySelectorAll(".sw")) swatch.style.background = colors.get(swatch.dataset.reason);
  }

  function renderLots(board) {
    $("lots-empty").hidden = board.lots.length > 0;
    const ls = board.lot_summary;
    $("lots-note").textContent = ls.provisioned === null ? t("lots.noList") : ls.list_error ? t("lots.listError", { time: clock(ls.listed_at) }) : "";
    $("lots-note").title = ls.list_error || "";
    $("lots").replaceChildren(...board.lots.map((lot) => {
      const reported = lot.occupied !== null;
      const head = h("div", { class: "lot-head" },
        h("span", { class: "lot-name", title: lot.name || "" }, lot.lot_id, h("span", { class: "muted" }, ` · ${t(`vehicle.${lot.vehicle_type}`)}`)));
      const data = { lot: lot.lot_id, vehicle: lot.vehicle_type, reported: String(reported) };
      if (!reported) {
        head.append(
          h("span", { class: "lot-use muted" }, t("lots.places", { capacity: num(lot.capacity) })),
          h("span", { class: "lot-free" }, t("lots.unreported")),
        );
        return h("li", { dataset: data, class: "lot-unreported", title: lot.name || "" }, head);
      }
      const used = lot.capacity ? lot.occupied / lot.capacity : 1;
      const bar = h("div", { class: `bar${lot.free <= 0 ? " full" : used >= 0.85 ? " warn" : ""}` }, h("span"));
      bar.firstChild.style.width = `${Math.min(100, Math.round(used * 100))}%`;
      head.append(
        h("span", { class: "lot-use muted" }, `${num(lot.occupied)}/${num(lot.capacity)}`),
        h("span", { class: `lot-free${lot.free <= 0 ? " none" : ""}` }, h("span", { class: "n" }, num(lot.free)), " ", h("small", {}, t("lots.free"))),
      );
      return h(
        "li",
        { dataset: data, title: t("lots.of", { occupied: num(lot.occupied), capacity: num(lot.capacity), time: clock(lot.updated_at) }) },
        head,
        bar,
      );
    }));
  }

  function renderRevenue(board) {
    const hours = board.today.revenue_by_hour;
    const labels = hours.map((x) => clock(x.hour, false).slice(0, 2) + "h");
    $("chart-revenue").replaceChildren(barChart({
      width: 420, height: 170, labels,
      series: [hours.map((x) => x.transit), hours.map((x) => x.parking)],
      colors: ["#0f766e", "#7c3aed"],
      yFormat: compactVnd,
      labelEvery: 3,
      tooltip: (i) => `${labels[i]} · ${t("revenue.transit")}: ${vnd(hours[i].transit)} · ${t("revenue.parking")}: ${vnd(hours[i].parking)}`,
    }));
  }

  function renderGates(board) {
    $("gates-empty").hidden = board.gates.length > 0;
    const groups = new Map();
    for (const gate of board.gates) {
      const where = gate.station || (gate.route ? `bus:${gate.route}` : "?");
      if (!groups.has(where)) groups.set(where, []);
      groups.get(where).push(gate);
    }
    $("gates").replaceChildren(...[...groups.entries()].map(([where, gates]) => h(
      "div", { class: "gate-row" },
      h("span", { class: "where", title: where }, placeName(where)),
      h("span", { class: "gate-chips" }, gates.map((gate) => h(
        "span",
        {
          class: `chip ${gate.state}`,
          dataset: { gate: gate.gate_id, state: gate.state, online: String(gate.online) },
          title: gate.last_seen ? t("gates.seen", { time: clock(gate.last_seen), ago: ago(gate.last_seen) }) : t("gates.neverSeen"),
        },
        h("span", { class: `dot ${gate.state}` }),
        gate.gate_id,
      ))),
    )));
  }

  // Alerts ----------------------------------------------------------------------------------------

  function alertParams(alert) {
    const p = alert.params || {};
    return {
      ...p,
      gate: alert.gate_id,
      ticket: short(alert.ticket_id),
      lot: alert.lot_id,
      vehicle: p.vehicle_type ? t(`vehicle.${p.vehicle_type}`) : "",
      amount: p.amount != null ? vnd(p.amount) : "–",
      cause: p.cause ? t(`cause.${p.cause}`) : "–",
      gates: Array.isArray(p.gates) ? p.gates.join(", ") : "–",
      from_station: p.from_station ? placeName(p.from_station) : "–",
      to_station: p.to_station ? placeName(p.to_station) : "–",
      last_seen: p.last_seen ? clock(p.last_seen) : "–",
    };
  }

  function renderAlerts() {
    const all = [...state.alerts.values()].sort((a, b) => (a.raised_at < b.raised_at ? 1 : -1));
    const shown = state.alertFilter === "open" ? all.filter((a) => !a.acknowledged_at) : all;
    $("alerts-empty").hidden = shown.length > 0;
    const admin = state.me?.role === "admin";
    $("alerts").replaceChildren(...shown.slice(0, 100).map((alert) => {
      const known = alert.rule !== "external" && I18N.en[`body.${alert.rule}`];
      const title = alert.rule === "external" ? alert.detail : t(`rule.${alert.rule}`);
      const body = known ? t(`body.${alert.rule}`, alertParams(alert)) : alert.detail;
      const foot = alert.acknowledged_at
        ? h("span", {}, t("alerts.ackedBy", { who: alert.acknowledged_by || "?" }))
        : admin
          ? h("button", { type: "button", class: "ack", onclick: () => acknowledge(alert.alert_id) }, t("alerts.ack"))
          : h("span");
      return h(
        "li",
        { class: `alert ${alert.severity}${alert.acknowledged_at ? " acked" : ""}`, dataset: { alertId: alert.alert_id, rule: alert.rule } },
        h("div", { class: "alert-head" }, h("span", { class: "alert-title" }, title), h("span", { class: "alert-time" }, clock(alert.raised_at))),
        h("div", { class: "alert-body" }, body),
        h("div", { class: "alert-foot" }, h("span", { class: "mono" }, alert.subject.length > 20 ? short(alert.subject) : alert.subject), foot),
      );
    }));
  }

  async function acknowledge(alertId) {
    try {
      const alert = await api(`/v1/alerts/${encodeURIComponent(alertId)}/ack`, { method: "POST" });
      state.alerts.set(alert.alert_id, alert);
      renderAlerts();
    } catch (error) {
      if (!(error instanceof SessionExpired)) window.alert(error.message);
    }
  }

  // Live tail -----------------------------------------------------------------------------------

  function tailQuery() {
    const params = new URLSearchParams({ limit: "100" });
    for (const [name, value] of Object.entries(state.filters)) if (value) params.set(name, value);
    return params.toString();
  }

  function matches(entry) {
    const f = state.filters;
    if (f.ticket && !(entry.ticket_id || "").toLowerCase().startsWith(f.ticket.toLowerCase())) return false;
    if (f.gate && (entry.gate_id || "").toLowerCase() !== f.gate.toLowerCase()) return false;
    if (f.plate && !(entry.plate || "").toLowerCase().includes(f.plate.toLowerCase())) return false;
    return !f.type || entry.type === f.type || entry.category === f.type;
  }

  function tagClass(entry) {
    if (entry.category === "validation") return entry.decision;
    return entry.category;
  }

  function tailDetail(entry) {
    const parts = [];
    if (entry.category === "validation") {
      if (entry.decision === "reject") parts.push(t(`reason.${entry.reason || "unknown"}`));
      if (entry.action && entry.action !== "none") parts.push(t(`action.${entry.action}`));
      if (entry.fare != null && entry.fare > 0) parts.push(t("detail.fare", { amount: vnd(entry.fare) }));
      if (entry.offline) parts.push(t("detail.offline"));
    } else if (entry.type === "citypass.payments.transfer.posted.v1") {
      parts.push(`${t(`kind.${entry.kind}`)} ${vnd(entry.amount)}`);
      if (entry.source) parts.push(t(`source.${entry.source}`));
    } else if (entry.category === "occupancy" && entry.capacity != null) {
      parts.push(`${t(`vehicle.${entry.vehicle_type}`)}: ${t("detail.free", { free: num(entry.free), capacity: num(entry.capacity) })}`);
    } else if (entry.category === "parking") {
      if (entry.vehicle_type) parts.push(t(`vehicle.${entry.vehicle_type}`));
      if (entry.amount != null) parts.push(t("detail.fee", { amount: vnd(entry.amount) }));
    } else if (entry.category === "ticket" && entry.product) {
      parts.push(entry.product);
    } else if (entry.type === "citypass.ops.alert.acknowledged.v1") {
      parts.push(t("alerts.ackedBy", { who: entry.acknowledged_by || "?" }));
    } else if (entry.alert) {
      const alert = entry.alert;
      parts.push(alert.rule === "external" ? alert.detail : t(`rule.${alert.rule}`));
    } else if (entry.amount != null) {
      parts.push(vnd(entry.amount));
    }
    return parts.join(" · ");
  }

  function tailRow(entry, fresh) {
    const where = entry.station ? placeName(entry.station) : entry.route ? `Bus ${entry.route}` : entry.lot_id || "";
    const whereDetail = entry.gate_id || (entry.lot_id && entry.station ? entry.lot_id : "");
    return h(
      "tr",
      { class: fresh ? "new" : null, dataset: { eventId: entry.id, type: entry.type } },
      h("td", { class: "mono" }, clock(entry.at)),
      h("td", {}, h("span", { class: `tag ${tagClass(entry)}` }, t(`type.${entry.type}`))),
      h("td", {}, where, whereDetail ? h("span", { class: "muted" }, ` · ${whereDetail}`) : null),
      h("td", { class: "mono", title: entry.ticket_id || entry.plate || "" }, entry.ticket_id ? short(entry.ticket_id) : entry.plate || ""),
      h("td", { class: "detail" }, tailDetail(entry)),
    );
  }

  function renderTail() {
    $("tail").tBodies[0].replaceChildren(...state.tail.map((entry) => tailRow(entry, false)));
  }

  let filterTimer = null;
  function onFilter() {
    state.filters = {
      ticket: $("f-ticket").value.trim(),
      gate: $("f-gate").value.trim(),
      plate: $("f-plate").value.trim(),
      type: $("f-type").value,
    };
    clearTimeout(filterTimer);
    filterTimer = setTimeout(async () => {
      try {
        state.tail = await api(`/v1/events?${tailQuery()}`);
        renderTail();
      } catch (error) {
        if (!(error instanceof SessionExpired)) console.warn(error);
      }
    }, 250);
  }

  // Pipeline --------------------------------------------------------------------------------------

  const fixed = (n, digits = 0) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(locale(), { maximumFractionDigits: digits }));

  async function refreshPipeline() {
    const health = await api("/v1/pipeline");
    $("pipeline-time").textContent = health.checked_at
      ? `${t("pipeline.checked", { time: clock(health.checked_at) })}${health.kafka_error ? ` · ${t("pipeline.kafka", { error: health.kafka_error })}` : ""}`
      : t("pipeline.none");
    $("pipeline-groups").replaceChildren(...health.groups.map((g) => h(
      "tr", { dataset: { group: g.group } },
      h("td", { class: "mono" }, g.group),
      h("td", { class: `num${g.lag > 0 ? " lagging" : ""}` }, num(g.lag)),
      h("td", { class: `num${g.lag_seconds > 5 ? " lagging" : ""}` }, fixed(g.lag_seconds, 1)),
      h("td", { class: "num" }, num(g.partitions)),
    )));
    $("pipeline-services").replaceChildren(...health.services.map((svc) => h(
      "tr", { dataset: { service: svc.service } },
      h("td", {}, svc.service),
      h("td", { class: `state ${svc.up ? "up" : "down"}`, title: svc.error || svc.url }, t(svc.up ? "pipeline.up" : "pipeline.down")),
      h("td", { class: "num" }, fixed(svc.outbox_backlog)),
      h("td", { class: "num" }, fixed(svc.outbox_oldest_age_seconds, 1)),
      h("td", { class: "num" }, fixed(svc.dead_letters)),
    )));
    $("pipeline-dead").textContent = fixed(health.dead_letter_records);
  }

  // Wiring ----------------------------------------------------------------------------------------

  function setLanguage(lang) {
    state.lang = lang;
    localStorage.setItem(LANG_KEY, lang);
    applyStaticText();
    if (state.me) {
      $("who-role").textContent = t(`role.${state.me.role}`);
      if (state.board) renderBoard(state.board);
      renderAlerts();
      renderTail();
      setLive($("live").dataset.status || "connecting");
      refreshPipeline().catch(() => {});
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    applyStaticText();
    $("login-form").addEventListener("submit", onLogin);
    $("logout").addEventListener("click", () => signOut(null));
    for (const button of document.querySelectorAll(".lang button")) {
      button.addEventListener("click", () => setLanguage(button.dataset.lang));
    }
    $("alert-filter").addEventListener("change", (event) => { state.alertFilter = event.target.value; renderAlerts(); });
    for (const id of ["f-ticket", "f-gate", "f-plate"]) $(id).addEventListener("input", onFilter);
    $("f-type").addEventListener("change", onFilter);
    $("tail-filters").addEventListener("submit", (event) => event.preventDefault());
    $("f-clear").addEventListener("click", () => {
      for (const id of ["f-ticket", "f-gate", "f-plate", "f-type"]) $(id).value = "";
      onFilter();
    });
    setInterval(() => { if (state.board) renderGates(state.board); }, 30000);
    if (state.token) {
      start().catch((error) => { if (!(error instanceof SessionExpired)) signOut("auth.error"); });
    } else {
      showLogin(null);
    }
  });
})();

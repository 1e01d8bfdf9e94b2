// Vietnamese first (the default), English second. `t("key", {name: value})` fills {name}.

const LANG_KEY = "citypass.lang";

export const STRINGS = {
  vi: {
    "app.subtitle": "Thẻ vé giao thông Hà Nội",
    "lang.switch": "EN",
    "lang.switchLabel": "Switch to English",
    "net.offline": "Ngoại tuyến",
    "nav.label": "Điều hướng chính",
    "nav.skip": "Bỏ qua đến nội dung",
    "nav.wallet": "Ví",
    "nav.buy": "Mua vé",
    "nav.tickets": "Vé của tôi",

    "auth.login": "Đăng nhập",
    "auth.signup": "Tạo tài khoản",
    "auth.modeLabel": "Đăng nhập hoặc tạo tài khoản",
    "auth.phone": "Số điện thoại",
    "auth.phoneHint": "Ví dụ: 0912 345 678",
    "auth.password": "Mật khẩu",
    "auth.passwordHint": "Ít nhất 8 ký tự",
    "auth.category": "Đối tượng",
    "auth.categoryHint": "Giá ưu đãi áp dụng sau khi nhân viên kiểm tra giấy tờ.",
    "auth.submitLogin": "Đăng nhập",
    "auth.submitSignup": "Tạo tài khoản",
    "auth.deviceNote": "Điện thoại này tạo một khoá ký riêng để ký mã QR. Khoá không bao giờ rời khỏi máy.",
    "auth.working": "Đang xử lý…",

    "category.regular": "Thông thường",
    "category.student": "Học sinh, sinh viên",
    "category.worker": "Công nhân khu công nghiệp",
    "category.elderly": "Người cao tuổi (từ 60 tuổi)",
    "category.child": "Trẻ em dưới 6 tuổi",
    "category.merit": "Người có công với cách mạng",
    "category.disabled": "Người khuyết tật",
    "category.poor_household": "Hộ nghèo",

    "wallet.title": "Ví của tôi",
    "wallet.hello": "Xin chào {phone}",
    "wallet.balance": "Số dư",
    "wallet.asOf": "Số dư lúc {time} (ngoại tuyến)",
    "wallet.topup": "Nạp tiền",
    "wallet.myTickets": "Vé của tôi",
    "wallet.buy": "Mua vé",
    "wallet.categoryPending": "Yêu cầu đối tượng “{category}” đang chờ duyệt.",
    "wallet.categoryRejected": "Yêu cầu đối tượng “{category}” không được duyệt.",
    "wallet.device": "Thiết bị này",
    "wallet.logout": "Đăng xuất",

    "topup.title": "Nạp tiền vào ví",
    "topup.amount": "Số tiền (VND)",
    "topup.amountHint": "Từ 10.000 đến 10.000.000 ₫",
    "topup.presets": "Số tiền gợi ý",
    "topup.create": "Tạo mã VietQR",
    "topup.scan": "Mở ứng dụng ngân hàng và quét mã VietQR này để chuyển khoản.",
    "topup.qrAlt": "Mã VietQR chuyển khoản {amount}",
    "topup.reference": "Mã tham chiếu",
    "topup.payload": "Nội dung VietQR",
    "topup.copy": "Sao chép",
    "topup.copied": "Đã sao chép",
    "topup.waiting": "Đang chờ ngân hàng xác nhận…",
    "topup.paid": "Đã nhận {amount}. Số dư đã được cập nhật.",
    "topup.stillWaiting": "Chưa nhận được tiền. Kiểm tra lại sau khi chuyển khoản.",
    "topup.check": "Kiểm tra lại",
    "topup.badAmount": "Nhập số tiền từ 10.000 đến 10.000.000 ₫.",
    "topup.again": "Nạp số tiền khác",
    "topup.toWallet": "Về ví",

    "buy.title": "Mua vé",
    "buy.button": "Mua",
    "buy.buttonLabel": "Mua {name}",
    "buy.free": "Miễn phí",
    "buy.perTrip": "Trả theo quãng đường khi ra ga",
    "buy.days": "{n} ngày",
    "buy.days.one": "1 ngày",
    "buy.rides": "{n} lượt",
    "buy.rides.one": "1 lượt",
    "buy.unlimited": "Không giới hạn lượt",
    "buy.allLines": "Mọi tuyến",
    "buy.lineChoice": "Một tuyến tự chọn",
    "buy.metro": "Metro",
    "buy.bus": "Xe buýt",
    "buy.any": "Metro và xe buýt",
    "buy.none": "Không có sản phẩm nào cho đối tượng của bạn.",
    "buy.confirmTitle": "Xác nhận mua vé",
    "buy.price": "Giá",
    "buy.balance": "Số dư hiện tại",
    "buy.line": "Tuyến (mã tuyến)",
    "buy.lineHint": "Ví dụ: 32 hoặc 2A",
    "buy.pay": "Thanh toán",
    "buy.retry": "Thử lại",
    "buy.cancel": "Đóng",
    "buy.working": "Đang thanh toán…",
    "buy.unfinished": "Giao dịch mua {name} chưa hoàn tất.",
    "buy.unfinishedAction": "Tiếp tục",
    "buy.done": "Đã mua {name}.",
    "buy.topupFirst": "Nạp tiền",

    "tickets.title": "Vé của tôi",
    "tickets.empty": "Bạn chưa có vé nào.",
    "tickets.until": "Hiệu lực đến {time}",
    "tickets.status.active": "Còn hiệu lực",
    "tickets.status.expired": "Hết hạn",
    "tickets.status.revoked": "Đã thu hồi",
    "tickets.asOf": "Danh sách lúc {time} (ngoại tuyến)",
    "tickets.open": "Mở vé {name}",

    "ticket.back": "Vé của tôi",
    "ticket.qrLabel": "Mã QR động của vé {name}. Mã đổi sau mỗi {seconds} giây.",
    "ticket.validUntil": "Vé hiệu lực đến {time}",
    "ticket.lines": "Phạm vi: {lines}",
    "ticket.countdown": "Mã mới sau {n} giây",
    "ticket.clock": "Giờ hiện tại",
    "ticket.brightness": "Tăng độ sáng màn hình lên tối đa khi đưa mã vào máy quét.",
    "ticket.offline": "Ngoại tuyến: mã vẫn dùng được đến {time}.",
    "ticket.loading": "Đang tải vé…",
    "ticket.useThisPhone": "Dùng điện thoại này",
    "ticket.otherDevice": "Vé này đang gắn với một điện thoại khác. Chuyển sang điện thoại này sẽ vô hiệu hoá mã trên máy kia.",
    "ticket.credentialExpired": "Mã vé trên máy đã hết hạn. Hãy kết nối mạng để tải lại.",
    "ticket.needNetwork": "Cần kết nối mạng một lần để tải vé này về máy.",
    "ticket.expired": "Vé đã hết hạn.",
    "ticket.revoked": "Vé đã bị thu hồi.",

    "err.network": "Không kết nối được máy chủ. Kiểm tra mạng rồi thử lại.",
    "err.generic": "Yêu cầu bị từ chối: {detail}",
    "err.invalid_credentials": "Sai số điện thoại hoặc mật khẩu.",
    "err.phone_taken": "Số điện thoại này đã có tài khoản. Hãy đăng nhập.",
    "err.phone": "Số điện thoại di động Việt Nam không hợp lệ (ví dụ 0912 345 678).",
    "err.password": "Mật khẩu cần từ 8 đến 128 ký tự.",
    "err.not_logged_in": "Hãy đăng nhập.",
    "err.session_ended": "Phiên đăng nhập đã hết. Hãy đăng nhập lại.",
    "err.invalid_refresh_token": "Phiên đăng nhập đã hết. Hãy đăng nhập lại.",
    "err.refresh_token_reused": "Phiên đăng nhập đã bị thu hồi. Hãy đăng nhập lại.",
    "err.insufficient_funds": "Số dư không đủ: còn thiếu {shortfall}. Nạp thêm tiền rồi thử lại.",
    "err.category_not_eligible": "Sản phẩm này không dành cho đối tượng của bạn.",
    "err.payments_unavailable": "Hệ thống thanh toán đang bận. Giao dịch được giữ lại; hãy thử lại sau ít phút (không bị trừ tiền hai lần).",
    "err.payment_in_progress": "Giao dịch đang được xử lý. Thử lại sau vài giây.",
    "err.purchase_cancelled": "Giao dịch đã bị huỷ; nếu đã trừ tiền, tiền đã được hoàn.",
    "err.unknown_product": "Sản phẩm không còn được bán.",
    "err.invalid_line": "Mã tuyến không hợp lệ cho sản phẩm này.",
    "err.idempotency_key_reused": "Giao dịch này đã được gửi với nội dung khác. Hãy bắt đầu lại.",
    "err.device_switch_limit": "Bạn đã đổi điện thoại quá nhiều lần. Có thể đổi lại sau {time}.",
    "err.device_key_reused": "Khoá thiết bị này đã từng được dùng.",
    "err.invalid_public_key": "Khoá thiết bị không hợp lệ.",
    "err.no_active_device": "Chưa có điện thoại nào được đăng ký cho tài khoản.",
    "err.ticket_revoked": "Vé đã bị thu hồi.",
    "err.ticket_expired": "Vé đã hết hạn.",
    "err.ticket_not_found": "Không tìm thấy vé.",
    "err.topup_not_found": "Không tìm thấy giao dịch nạp tiền.",
    "err.no_webcrypto": "Trình duyệt này không tạo được khoá Ed25519 nên không thể hiển thị mã QR. Hãy dùng Chrome, Safari hoặc Firefox bản mới, qua HTTPS.",
    "err.storage": "Không lưu được dữ liệu trên máy (IndexedDB). Hãy tắt chế độ ẩn danh rồi thử lại.",
  },
  en: {
    "app.subtitle": "Hanoi transit card",
    "lang.switch": "VI",
    "lang.switchLabel": "Chuyển sang tiếng Việt",
    "net.offline": "Offline",
    "nav.label": "Main navigation",
    "nav.skip": "Skip to content",
    "nav.wallet": "Wallet",
    "nav.buy": "Buy",
    "nav.tickets": "My tickets",

    "auth.login": "Log in",
    "auth.signup": "Create account",
    "auth.modeLabel": "Log in or create an account",
    "auth.phone": "Mobile number",
    "auth.phoneHint": "For example 0912 345 678",
    "auth.password": "Password",
    "auth.passwordHint": "At least 8 characters",
    "auth.category": "Rider category",
    "auth.categoryHint": "Concession prices apply once staff have checked your papers.",
    "auth.submitLogin": "Log in",
    "auth.submitSignup": "Create account",
    "auth.deviceNote": "This phone creates its own signing key for your QR codes. The key never leaves the phone.",
    "auth.working": "Working…",

    "category.regular": "Regular",
    "category.student": "Student",
    "category.worker": "Industrial-zone worker",
    "category.elderly": "Senior (60 and over)",
    "category.child": "Child under 6",
    "category.merit": "Person with merit",
    "category.disabled": "Person with a disability",
    "category.poor_household": "Poor household",

    "wallet.title": "My wallet",
    "wallet.hello": "Hello {phone}",
    "wallet.balance": "Balance",
    "wallet.asOf": "Balance at {time} (offline)",
    "wallet.topup": "Top up",
    "wallet.myTickets": "My tickets",
    "wallet.buy": "Buy a ticket",
    "wallet.categoryPending": "Your “{category}” request is waiting for approval.",
    "wallet.categoryRejected": "Your “{category}” request was not approved.",
    "wallet.device": "This phone",
    "wallet.logout": "Log out",

    "topup.title": "Top up your wallet",
    "topup.amount": "Amount (VND)",
    "topup.amountHint": "From 10,000 to 10,000,000 VND",
    "topup.presets": "Suggested amounts",
    "topup.create": "Create VietQR",
    "topup.scan": "Open your banking app and scan this VietQR to transfer.",
    "topup.qrAlt": "VietQR bank transfer of {amount}",
    "topup.reference": "Reference",
    "topup.payload": "VietQR payload",
    "topup.copy": "Copy",
    "topup.copied": "Copied",
    "topup.waiting": "Waiting for the bank to confirm…",
    "topup.paid": "{amount} received. Your balance is updated.",
    "topup.stillWaiting": "Nothing received yet. Check again after you have transferred.",
    "topup.check": "Check again",
    "topup.badAmount": "Enter an amount from 10,000 to 10,000,000 VND.",
    "topup.again": "Another amount",
    "topup.toWallet": "Back to wallet",

    "buy.title": "Buy a ticket",
    "buy.button": "Buy",
    "buy.buttonLabel": "Buy {name}",
    "buy.free": "Free",
    "buy.perTrip": "Pay by distance when you exit",
    "buy.days": "{n} days",
    "buy.days.one": "1 day",
    "buy.rides": "{n} rides",
    "buy.rides.one": "1 ride",
    "buy.unlimited": "Unlimited rides",
    "buy.allLines": "All lines",
    "buy.lineChoice": "One line of your choice",
    "buy.metro": "Metro",
    "buy.bus": "Bus",
    "buy.any": "Metro and bus",
    "buy.none": "No products for your rider category.",
    "buy.confirmTitle": "Confirm purchase",
    "buy.price": "Price",
    "buy.balance": "Current balance",
    "buy.line": "Line (route code)",
    "buy.lineHint": "For example 32 or 2A",
    "buy.pay": "Pay",
    "buy.retry": "Try again",
    "buy.cancel": "Close",
    "buy.working": "Paying…",
    "buy.unfinished": "Your purchase of {name} is not finished.",
    "buy.unfinishedAction": "Continue",
    "buy.done": "{name} bought.",
    "buy.topupFirst": "Top up",

    "tickets.title": "My tickets",
    "tickets.empty": "You have no tickets yet.",
    "tickets.until": "Valid until {time}",
    "tickets.status.active": "Valid",
    "tickets.status.expired": "Expired",
    "tickets.status.revoked": "Revoked",
    "tickets.asOf": "List as of {time} (offline)",
    "tickets.open": "Open ticket {name}",

    "ticket.back": "My tickets",
    "ticket.qrLabel": "Dynamic QR code of ticket {name}. It changes every {seconds} seconds.",
    "ticket.validUntil": "Ticket valid until {time}",
    "ticket.lines": "Valid on: {lines}",
    "ticket.countdown": "New code in {n} s",
    "ticket.clock": "Current time",
    "ticket.brightness": "Turn your screen brightness all the way up when you scan.",
    "ticket.offline": "Offline: this code keeps working until {time}.",
    "ticket.loading": "Loading ticket…",
    "ticket.useThisPhone": "Use this phone",
    "ticket.otherDevice": "This ticket is bound to another phone. Moving it here disables the code on the other phone.",
    "ticket.credentialExpired": "The ticket stored on this phone has expired. Connect to the internet to renew it.",
    "ticket.needNetwork": "Connect once to download this ticket to the phone.",
    "ticket.expired": "This ticket has expired.",
    "ticket.revoked": "This ticket was revoked.",

    "err.network": "Cannot reach the server. Check your connection and try again.",
    "err.generic": "Refused: {detail}",
    "err.invalid_credentials": "Wrong mobile number or password.",
    "err.phone_taken": "This number already has an account. Please log in.",
    "err.phone": "Not a Vietnamese mobile number (for example 0912 345 678).",
    "err.password": "The password needs 8 to 128 characters.",
    "err.not_logged_in": "Please log in.",
    "err.session_ended": "Your session has ended. Please log in again.",
    "err.invalid_refresh_token": "Your session has ended. Please log in again.",
    "err.refresh_token_reused": "Your session was revoked. Please log in again.",
    "err.insufficient_funds": "Not enough money: {shortfall} short. Top up and try again.",
    "err.category_not_eligible": "This product is not for your rider category.",
    "err.payments_unavailable": "Payments are busy. Your purchase is kept; try again in a few minutes (you will not be charged twice).",
    "err.payment_in_progress": "This purchase is being processed. Try again in a few seconds.",
    "err.purchase_cancelled": "The purchase was cancelled; anything charged was refunded.",
    "err.unknown_product": "This product is no longer on sale.",
    "err.invalid_line": "Not a valid line for this product.",
    "err.idempotency_key_reused": "This purchase was already sent with other details. Please start again.",
    "err.device_switch_limit": "You have switched phones too often. You can switch again after {time}.",
    "err.device_key_reused": "This device key was used before.",
    "err.invalid_public_key": "Invalid device key.",
    "err.no_active_device": "No phone is registered for this account yet.",
    "err.ticket_revoked": "This ticket was revoked.",
    "err.ticket_expired": "This ticket has expired.",
    "err.ticket_not_found": "Ticket not found.",
    "err.topup_not_found": "Top-up not found.",
    "err.no_webcrypto": "This browser cannot create Ed25519 keys, so it cannot show your QR code. Use a recent Chrome, Safari or Firefox over HTTPS.",
    "err.storage": "This phone refused to store data (IndexedDB). Leave private browsing and try again.",
  },
};

let current = localStorage.getItem(LANG_KEY) === "en" ? "en" : "vi";

export const lang = () => current;

export function setLang(value) {
  current = value === "en" ? "en" : "vi";
  localStorage.setItem(LANG_KEY, current);
}

export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS.vi[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
}

export const locale = () => (current === "vi" ? "vi-VN" : "en-GB");
const ZONE = "Asia/Ho_Chi_Minh";

export function money(amount) {
  return new Intl.NumberFormat(locale(), { style: "currency", currency: "VND" }).format(amount);
}

export function dateTime(value) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone: ZONE, hour: "2-digit", minute: "2-digit", day: "2-digit", month: "2-digit", year: "numeric",
  }).format(new Date(value));
}

export function clock(value) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone: ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(value));
}

export function day(value) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone: ZONE, weekday: "long", day: "numeric", month: "long",
  }).format(new Date(value));
}

/** Fills every [data-i18n] text and [data-i18n-<attr>] attribute under `root`. */
export function translate(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("*")) {
    for (const name of Object.keys(el.dataset)) {
      if (name.startsWith("i18n") && name !== "i18n") {
        const attr = name.slice(4).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/^-/, "");
        el.setAttribute(attr, t(el.dataset[name]));
      }
    }
  }
}
